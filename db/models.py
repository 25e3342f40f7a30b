"""Typed SQLAlchemy models: the schema every other layer reads and writes.

One row per thing that happened: an answer row per arm shown (``off``, ``on``) plus ``shadow``
rows for cloud answers fetched but never shown, one handoff decision per turn, and one vote per
conversation round. Enough is stored to replay any policy threshold offline.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

REGIONS = ("sf", "europe", "apac")
Region = StrEnum("Region", {name: name for name in REGIONS})  # for CLI options
ROLES = ("admin", "organizer")
DISPLAYS = ("live", "fair")  # how the panes streamed: as generated, or released together (latency-fair)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_uid() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        dt.datetime: DateTime(timezone=True),
        Decimal: Numeric(12, 6),
    }


class StableId:
    """A ``uid`` that stays the same when a row is copied to another database (``handoff merge``).

    Integer ids are local to one database; two regions both have a participant 17. The uid is
    what a merge matches on, so running it twice adds nothing.
    """

    uid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uid)


class Event(StableId, Base):
    __tablename__ = "events"
    __table_args__ = (CheckConstraint("region IN ('sf', 'europe', 'apac')", name="region"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(16))
    city: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64))
    starts_on: Mapped[dt.date | None] = mapped_column(Date)
    ends_on: Mapped[dt.date | None] = mapped_column(Date)
    # handoff configuration; NULL means "use the settings default"
    handoff_policy: Mapped[str | None] = mapped_column(String(32))
    handoff_threshold: Mapped[float | None] = mapped_column(Float)
    shadow_rate: Mapped[float | None] = mapped_column(Float)
    cloud_budget: Mapped[Decimal | None]
    cloud_spent: Mapped[Decimal] = mapped_column(default=Decimal(0))
    currency: Mapped[str] = mapped_column(String(8), default="USD")
    # attendee page configuration
    ui_language: Mapped[str] = mapped_column(String(8), default="en")
    consent_text: Mapped[str | None] = mapped_column(Text)
    like_tags: Mapped[list[str] | None]
    dislike_tags: Mapped[list[str] | None]
    ask_profile: Mapped[bool] = mapped_column(Boolean, default=False)
    # both panes start and finish showing text together, so timing does not reveal the handoff side
    latency_fair: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    licence: Mapped[str | None] = mapped_column(Text)
    # the public results wall (/wall?event=CODE): off until an organizer turns it on
    wall_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    participants: Mapped[list[Participant]] = relationship(back_populates="event")


class Participant(StableId, Base):
    """A pseudonymous attendee of one event; only created once consent was given."""

    __tablename__ = "participants"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    consented_at: Mapped[dt.datetime]
    ui_language: Mapped[str | None] = mapped_column(String(8))
    profile: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    event: Mapped[Event] = relationship(back_populates="participants")


class Conversation(StableId, Base):
    """One blind comparison; ``handoff_side`` says which pane (a = left) holds the handoff arm."""

    __tablename__ = "conversations"
    __table_args__ = (CheckConstraint("handoff_side IN ('a', 'b')", name="handoff_side"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"), index=True)
    handoff_side: Mapped[str] = mapped_column(String(1))
    category: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    hidden_at: Mapped[dt.datetime | None]
    hidden_by: Mapped[str | None] = mapped_column(String(100))

    turns: Mapped[list[Turn]] = relationship(
        back_populates="conversation", order_by="Turn.index", cascade="all, delete-orphan"
    )
    votes: Mapped[list[Vote]] = relationship(back_populates="conversation")


class Turn(StableId, Base):
    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("conversation_id", "index", name="conversation_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(16))
    category: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)

    conversation: Mapped[Conversation] = relationship(back_populates="turns")
    answers: Mapped[list[Answer]] = relationship(back_populates="turn", cascade="all, delete-orphan")
    decision: Mapped[HandoffDecision | None] = relationship(
        back_populates="turn", cascade="all, delete-orphan", uselist=False
    )


class HandoffDecision(StableId, Base):
    """What the live policy saw and decided, with every cheap signal, so any threshold replays."""

    __tablename__ = "handoff_decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), unique=True)
    policy: Mapped[str] = mapped_column(String(32))
    policy_version: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(8))
    threshold: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    handed_off: Mapped[bool] = mapped_column(Boolean, index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    # why a positive decision did not reach the cloud: budget, rate_limit, cloud_error
    blocked_by: Mapped[str | None] = mapped_column(String(32))
    latency_ms: Mapped[float] = mapped_column(Float)
    signals: Mapped[dict[str, Any]]
    shadow_propensity: Mapped[float | None] = mapped_column(Float)
    # the local engine whose draft was scored (transformers | llamacpp | openai); host, model and
    # revision are in signals["engine"] and on the answer rows
    engine: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    turn: Mapped[Turn] = relationship(back_populates="decision")


class Answer(StableId, Base):
    """One answer as shown in one arm (``off``/``on``) or fetched as a never-shown ``shadow``."""

    __tablename__ = "answers"
    __table_args__ = (
        UniqueConstraint("turn_id", "arm", name="turn_arm"),
        CheckConstraint("arm IN ('off', 'on', 'shadow')", name="arm"),
        CheckConstraint("source IN ('local', 'cloud')", name="source"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    arm: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200))
    model_revision: Mapped[str | None] = mapped_column(String(100))
    dtype: Mapped[str | None] = mapped_column(String(16))
    engine: Mapped[str | None] = mapped_column(String(16))  # local answers: transformers | llamacpp | openai
    base_url_host: Mapped[str | None] = mapped_column(String(200))  # the server's host[:port], never a key
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    retries: Mapped[int] = mapped_column(Integer, default=0)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    cost: Mapped[Decimal | None]
    price_version: Mapped[str | None] = mapped_column(String(32))
    # style features (tokens, headers, lists, bold, code_blocks) for style control; see feedback.style
    style: Mapped[dict[str, Any] | None]
    # the text names a model or company, so the vote on it was not blind
    reveals_origin: Mapped[bool | None] = mapped_column(Boolean)
    # estimated energy of producing this answer, and how it was estimated (feedback.energy)
    energy_wh: Mapped[float | None] = mapped_column(Float)
    energy_method: Mapped[str | None] = mapped_column(String(120))
    # the decoding parameters it was generated with (feedback.records.AnswerRecord.decoding)
    decoding: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    turn: Mapped[Turn] = relationship(back_populates="answers")


class Vote(StableId, Base):
    """A participant's verdict on a conversation, after a given turn; editable until the next prompt."""

    __tablename__ = "votes"
    __table_args__ = (
        CheckConstraint("winner IN ('a', 'b', 'tie', 'both_bad', 'identical')", name="winner"),
        CheckConstraint("display IS NULL OR display IN ('live', 'fair')", name="display"),
        UniqueConstraint("conversation_id", "turn_id", name="conversation_turn"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    winner: Mapped[str] = mapped_column(String(16))
    # winner in arm terms (on / off / tie / both_bad / identical), so SQL aggregates need no join
    winner_arm: Mapped[str] = mapped_column(String(16), index=True)
    comment: Mapped[str | None] = mapped_column(Text)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    # answers complete -> first save of this vote (too fast to have read them is a quality flag)
    time_to_vote_ms: Mapped[float | None] = mapped_column(Float)
    display: Mapped[str | None] = mapped_column(String(8))  # DISPLAYS: which streaming the voter saw
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    hidden_at: Mapped[dt.datetime | None]
    hidden_by: Mapped[str | None] = mapped_column(String(100))

    conversation: Mapped[Conversation] = relationship(back_populates="votes")
    ratings: Mapped[list[Rating]] = relationship(back_populates="vote", cascade="all, delete-orphan")


class Rating(StableId, Base):
    """Stars and reason tags for one arm's answer (``both`` when the panes were identical)."""

    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("vote_id", "arm", name="vote_arm"),
        CheckConstraint("stars IS NULL OR (stars BETWEEN 1 AND 5)", name="stars"),
        CheckConstraint("arm IN ('off', 'on', 'both')", name="arm"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    vote_id: Mapped[int] = mapped_column(ForeignKey("votes.id", ondelete="CASCADE"), index=True)
    arm: Mapped[str] = mapped_column(String(8))
    stars: Mapped[int | None] = mapped_column(Integer)
    tags: Mapped[list[str] | None]

    vote: Mapped[Vote] = relationship(back_populates="ratings")


class JudgeVerdict(Base):
    """An LLM judge's verdict on a voted pair in one presentation order, kept apart from human votes."""

    __tablename__ = "judge_verdicts"
    __table_args__ = (
        UniqueConstraint("vote_id", "model", "order", name="vote_model_order"),
        CheckConstraint("\"order\" IN ('on_first', 'off_first')", name="order"),
        CheckConstraint("winner_arm IS NULL OR winner_arm IN ('on', 'off', 'tie')", name="winner_arm"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    vote_id: Mapped[int] = mapped_column(ForeignKey("votes.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(200))
    base_url_host: Mapped[str | None] = mapped_column(String(200))
    order: Mapped[str] = mapped_column(String(16))  # which arm's answer was shown to the judge first
    winner_arm: Mapped[str | None] = mapped_column(String(16))  # None: the reply named no winner
    reply: Mapped[str] = mapped_column(Text)
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[Decimal | None]
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TurnSlot(Base):
    """A turn being answered now: at most ``max_running_turns_per_event`` per event, across replicas.

    Also the record of every started turn (stopped or not), which the prompt rate limit counts.
    A slot of a crashed replica lapses at ``expires_at``.
    """

    __tablename__ = "turn_slots"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]


class Organizer(Base):
    """Someone who may sign in to the organizer pages: admin of all events or organizer of one."""

    __tablename__ = "organizers"
    __table_args__ = (CheckConstraint("role IN ('admin', 'organizer')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None]
    last_login_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


Index("ix_answers_arm_source", Answer.arm, Answer.source)


class SignInThrottle(Base):
    """Failed sign-ins under a username without an account, throttled like an account's, so the
    lock-out message does not tell which usernames exist."""

    __tablename__ = "sign_in_throttles"

    username: Mapped[str] = mapped_column(String(100), primary_key=True)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None]


class RollupCount(Base):
    """A counter behind the organizer overview, per event, kept by ``db.rollups`` in the writing transaction.

    ``kind`` names what is counted (participants, conversations, turns, handed_off, reached_cloud,
    blocked, error, language, tag, latency: a 10 ms bucket); ``arm`` and ``label`` say which one ('' where
    unused).
    """

    __tablename__ = "rollup_counts"

    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    arm: Mapped[str] = mapped_column(String(16), primary_key=True)
    label: Mapped[str] = mapped_column(Text, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class RollupVote(Base):
    """Counted votes per event, UTC minute (``YYYY-MM-DD HH:MM:00``) and verdict in arm terms."""

    __tablename__ = "rollup_votes"

    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    minute: Mapped[str] = mapped_column(String(19), primary_key=True)
    winner_arm: Mapped[str] = mapped_column(String(16), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class RollupEnergy(Base):
    """Summed energy estimates and handoff cloud cost of the counted prompts with estimates, per event."""

    __tablename__ = "rollup_energy"

    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    prompts: Mapped[int] = mapped_column(BigInteger)
    local_wh: Mapped[float] = mapped_column(Float)
    handoff_wh: Mapped[float] = mapped_column(Float)
    handoff_cost: Mapped[Decimal] = mapped_column(Numeric(18, 6))


class RollupLatency(Base):
    """One row per counted shown answer with a latency: percentiles are not sums, so the overview reads
    the exact nearest rank from these narrow, indexed rows (``ORDER BY latency_ms OFFSET rank - 1``)."""

    __tablename__ = "rollup_latency"
    __table_args__ = (
        Index("ix_rollup_latency_arm_latency", "arm", "latency_ms", "event_id"),
        Index("ix_rollup_latency_event_arm_latency", "event_id", "arm", "latency_ms"),
    )

    answer_id: Mapped[int] = mapped_column(ForeignKey("answers.id", ondelete="CASCADE"), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    arm: Mapped[str] = mapped_column(String(8))
    latency_ms: Mapped[float] = mapped_column(Float)
