"""What an export may contain, read in batches: consented, visible conversations with their turns.

Conversation ids are streamed (server-side cursor on PostgreSQL) and each batch of ids is filled with
one query per table, so memory stays bounded by the batch size whatever the size of the database.
Redaction and participant re-hashing happen here, once, so every format gets the same treatment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, select

from db.models import Answer, Conversation, Event, HandoffDecision, Participant, Rating, Turn, Vote
from db.session import get_engine
from feedback.redaction import redact

BATCH = 500


@dataclass(frozen=True)
class ExportFilters:
    """Which part of the data: one event (code), one region, and an inclusive date range (UTC)."""

    event: str | None = None
    region: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None

    def describe(self) -> dict[str, str]:
        return {k: str(v) for k, v in vars(self).items() if v is not None}


@dataclass
class AnswerRow:
    arm: str
    source: str
    text: str
    model: str
    tokens_out: int | None
    latency_ms: float | None
    cost: float | None
    error_kind: str | None


@dataclass
class RatingRow:
    stars: int | None
    tags: list[str]


@dataclass
class VoteRow:
    id: int
    winner: str
    winner_arm: str
    comment: str | None
    final: bool
    created_at: dt.datetime
    ratings: dict[str, RatingRow] = field(default_factory=dict)  # off / on / both


@dataclass
class DecisionRow:
    policy: str
    threshold: float
    score: float
    handed_off: bool
    blocked_by: str | None
    shadow_propensity: float | None
    signals: dict[str, Any]


@dataclass
class TurnRow:
    id: int
    index: int
    prompt: str
    language: str | None
    category: str | None
    created_at: dt.datetime
    answers: dict[str, AnswerRow] = field(default_factory=dict)  # off / on / shadow
    decision: DecisionRow | None = None
    votes: list[VoteRow] = field(default_factory=list)


@dataclass
class ConversationRow:
    id: int
    event: str
    region: str
    participant: str  # salted hash, never the database id or pseudonym
    handoff_side: str
    category: str | None
    created_at: dt.datetime
    turns: list[TurnRow] = field(default_factory=list)

    def messages(self, arm: str, upto: int) -> list[dict[str, str]]:
        """The conversation as one arm saw it, through turn ``upto`` (user and assistant messages)."""
        out: list[dict[str, str]] = []
        for turn in self.turns[: upto + 1]:
            out.append({"role": "user", "content": turn.prompt})
            answer = turn.answers.get(arm)
            if answer is not None:
                out.append({"role": "assistant", "content": answer.text})
        return out


@dataclass
class Tally:
    """What the data card reports: counts per kind of row, what was left out and what was redacted."""

    conversations: int = 0
    turns: int = 0
    votes: int = 0
    event_ids: set[int] = field(default_factory=set)
    redactions: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def conversation_query(filters: ExportFilters) -> Select:
    """Consented participants only, hidden conversations excluded, filters applied."""
    stmt = (
        select(Conversation.id)
        .join(Participant, Participant.id == Conversation.participant_id)
        .join(Event, Event.id == Conversation.event_id)
        .where(Participant.consented_at.is_not(None), Conversation.hidden_at.is_(None))
    )
    if filters.event:
        stmt = stmt.where(Event.code == filters.event.strip().upper())
    if filters.region:
        stmt = stmt.where(Event.region == filters.region)
    if filters.since:
        stmt = stmt.where(Conversation.created_at >= _day_start(filters.since))
    if filters.until:
        stmt = stmt.where(Conversation.created_at < _day_start(filters.until + dt.timedelta(days=1)))
    return stmt


def count_participants(url: str, filters: ExportFilters) -> int:
    """Distinct participants in the selection, counted in SQL (no set of ids kept in memory)."""
    ids = conversation_query(filters).with_only_columns(Conversation.participant_id).distinct().subquery()
    with get_engine(url).connect() as connection:
        return connection.scalar(select(func.count()).select_from(ids)) or 0


def count_conversations(url: str, filters: ExportFilters) -> int:
    """How many conversations an export with these filters reads (the progress bar's total)."""
    with get_engine(url).connect() as connection:
        return connection.scalar(select(func.count()).select_from(conversation_query(filters).subquery())) or 0


def pseudonymize(participant_id: int, salt: bytes) -> str:
    """Salted, keyed hash of a participant: stable within one export, unjoinable across salts."""
    return hmac.new(salt, str(participant_id).encode(), hashlib.sha256).hexdigest()[:16]


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def iter_conversations(
    url: str, filters: ExportFilters, *, salt: bytes, redact_pii: bool, tally: Tally, batch: int = BATCH
) -> Iterator[list[ConversationRow]]:
    """Yield batches of fully loaded conversations (turns, answers, decisions, visible votes, ratings)."""
    engine = get_engine(url)
    clean = (lambda text: redact(text, tally.redactions)) if redact_pii else (lambda text: text)
    with engine.connect() as ids_connection, engine.connect() as connection:
        stream = ids_connection.execution_options(stream_results=True, yield_per=batch).execute(
            conversation_query(filters).order_by(Conversation.id)
        )
        for partition in stream.partitions(batch):
            ids = [row[0] for row in partition]
            yield _load(connection, ids, salt, clean, tally)


def _load(connection, ids: list[int], salt: bytes, clean, tally: Tally) -> list[ConversationRow]:  # noqa: ANN001
    conversations: dict[int, ConversationRow] = {}
    for row in connection.execute(
        select(
            Conversation.id, Event.code, Event.region, Event.id.label("event_id"), Conversation.participant_id,
            Conversation.handoff_side, Conversation.category, Conversation.created_at,
        )  # fmt: skip
        .join(Event, Event.id == Conversation.event_id)
        .where(Conversation.id.in_(ids))
        .order_by(Conversation.id)
    ):
        participant = pseudonymize(row.participant_id, salt)
        conversations[row.id] = ConversationRow(
            row.id, row.code, row.region, participant, row.handoff_side, row.category, _as_utc(row.created_at)
        )
        tally.event_ids.add(row.event_id)
    turns: dict[int, TurnRow] = {}
    for row in connection.execute(
        select(Turn.id, Turn.conversation_id, Turn.index, Turn.prompt, Turn.language, Turn.category, Turn.created_at)
        .where(Turn.conversation_id.in_(ids))
        .order_by(Turn.conversation_id, Turn.index)
    ):
        turn = TurnRow(row.id, row.index, clean(row.prompt), row.language, row.category, _as_utc(row.created_at))
        turns[row.id] = turn
        conversations[row.conversation_id].turns.append(turn)
    in_batch = Turn.conversation_id.in_(ids)
    for row in connection.execute(
        select(
            Answer.turn_id, Answer.arm, Answer.source, Answer.text, Answer.model, Answer.tokens_out,
            Answer.latency_ms, Answer.cost, Answer.error_kind,
        )  # fmt: skip
        .join(Turn, Turn.id == Answer.turn_id)
        .where(in_batch)
    ):
        turns[row.turn_id].answers[row.arm] = AnswerRow(
            row.arm, row.source, clean(row.text), row.model, row.tokens_out, row.latency_ms,
            float(row.cost) if row.cost is not None else None, row.error_kind,
        )  # fmt: skip
    for row in connection.execute(
        select(
            HandoffDecision.turn_id, HandoffDecision.policy, HandoffDecision.threshold, HandoffDecision.score,
            HandoffDecision.handed_off, HandoffDecision.blocked_by, HandoffDecision.shadow_propensity,
            HandoffDecision.signals,
        )  # fmt: skip
        .join(Turn, Turn.id == HandoffDecision.turn_id)
        .where(in_batch)
    ):
        turns[row.turn_id].decision = DecisionRow(
            row.policy, row.threshold, row.score, row.handed_off, row.blocked_by, row.shadow_propensity,
            row.signals or {},
        )  # fmt: skip
    votes: dict[int, VoteRow] = {}
    for row in connection.execute(
        select(
            Vote.id, Vote.turn_id, Vote.winner, Vote.winner_arm, Vote.comment, Vote.final, Vote.created_at
        )
        .where(Vote.conversation_id.in_(ids), Vote.hidden_at.is_(None))
        .order_by(Vote.id)
    ):
        vote = VoteRow(
            row.id, row.winner, row.winner_arm, clean(row.comment) if row.comment else None, row.final,
            _as_utc(row.created_at),
        )  # fmt: skip
        votes[row.id] = vote
        turns[row.turn_id].votes.append(vote)
    if votes:
        for row in connection.execute(
            select(Rating.vote_id, Rating.arm, Rating.stars, Rating.tags).where(Rating.vote_id.in_(list(votes)))
        ):
            votes[row.vote_id].ratings[row.arm] = RatingRow(row.stars, list(row.tags or []))
    tally.conversations += len(conversations)
    tally.turns += len(turns)
    tally.votes += len(votes)
    return list(conversations.values())
