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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Select, Text, bindparam, cast, func, null, select

from db.models import Answer, Conversation, Event, HandoffDecision, Rating, Turn, Vote
from db.session import get_engine
from db.visibility import counted_conversations, vote_not_hidden
from feedback.redaction import redact, screen

BATCH = 500
MEMO = 4096  # redacted texts and participant hashes remembered per export (bounded memory)


@dataclass(frozen=True)
class ExportFilters:
    """Which part of the data: one event (code), one region, and an inclusive date range (UTC)."""

    event: str | None = None
    region: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None

    def describe(self) -> dict[str, str]:
        return {k: str(v) for k, v in vars(self).items() if v is not None}


@dataclass(slots=True)
class AnswerRow:
    arm: str
    source: str
    text: str
    model: str
    tokens_out: int | None
    latency_ms: float | None
    cost: float | None
    error_kind: str | None
    energy_wh: float | None = None  # estimate (feedback.energy)


@dataclass(slots=True)
class RatingRow:
    stars: int | None
    tags: list[str]


@dataclass(slots=True)
class VoteFlags:
    """Vote-quality flags (``feedback.research``): exports carry them instead of dropping rows."""

    too_fast: bool
    flagged_participant: bool
    participant_flags: str  # why the participant is flagged: too_fast, same_side, burst (comma-separated)
    reveals_origin: bool
    duplicate: bool


FlagOf = Callable[[list[int]], list[VoteFlags | None]]  # a batch of vote ids -> their flags, in order


@dataclass(slots=True)
class VoteRow:
    id: int
    winner: str
    winner_arm: str
    comment: str | None
    final: bool
    created_at: dt.datetime
    ratings: dict[str, RatingRow] = field(default_factory=dict)  # off / on / both
    time_to_vote_ms: float | None = None
    display: str | None = None  # live or fair (latency-fair): how the panes streamed
    flags: VoteFlags | None = None


@dataclass(slots=True)
class DecisionRow:
    policy: str
    threshold: float
    score: float
    handed_off: bool
    blocked_by: str | None
    shadow_propensity: float | None
    signals: dict[str, Any]


@dataclass(slots=True)
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


@dataclass(slots=True)
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
    """The conversations that count (``db.visibility``), with the filters applied."""
    stmt = counted_conversations().join(Event, Event.id == Conversation.event_id)
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
    return hmac.digest(salt, str(participant_id).encode(), hashlib.sha256).hex()[:16]  # hmac.new's, one call


def _as_utc(value: dt.datetime | str) -> dt.datetime:
    if value.__class__ is str:  # SQLite's text, read as SQLAlchemy reads it (``_Query``)
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _bool(value: Any) -> bool | None:
    """A BOOLEAN as SQLAlchemy returns it: SQLite's 0/1 read raw become False/True."""
    return value if value is None or value.__class__ is bool else (True if value else False)


def _money(value: Any) -> float | None:
    """A NUMERIC(12, 6) as a float: SQLAlchemy reads SQLite's REAL as Decimal('%.6f' % value)."""
    if value is None:
        return None
    return float(Decimal(f"{value:.6f}") if value.__class__ is float else value)


class _Cleaner:
    """Redaction with a bounded memo: prompts repeat a lot (same questions asked at every event), and a
    repeated text is redacted once while its redaction counts are still tallied per occurrence.
    ``many`` screens a whole batch in one RE2 pass first (``feedback.redaction.screen``), so only the
    few texts that might hold PII reach the Python patterns."""

    def __init__(self, tally: Tally, redact_pii: bool) -> None:
        self.tally, self.redact_pii = tally, redact_pii

        @lru_cache(maxsize=MEMO)
        def redacted(text: str) -> tuple[str, tuple[tuple[str, int], ...]]:
            found: Counter[str] = Counter()
            return redact(text, found), tuple(found.items())

        self._redacted = redacted

    def __call__(self, text: str) -> str:
        if not self.redact_pii:
            return text
        out, found = self._redacted(text)
        for kind, n in found:
            self.tally.redactions[kind] += n
        return out

    def many(self, texts: list[str]) -> list[str]:
        if not self.redact_pii:
            return texts
        return [self(text) if hit else text for text, hit in zip(texts, screen(texts), strict=True)]


_PLAIN = (float, int, bool, type(None))


def _cleaned(value: Any, clean: Callable[[str], str]) -> Any:
    """Every string inside decision signals redacted (a self-handoff reason quotes the prompt)."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):  # mostly numbers: those are kept without a call
        return {key: item if item.__class__ in _PLAIN else _cleaned(item, clean) for key, item in value.items()}
    if isinstance(value, list):
        return [_cleaned(item, clean) for item in value]
    return value


def iter_conversations(
    url: str,
    filters: ExportFilters,
    *,
    salt: bytes,
    redact_pii: bool,
    tally: Tally,
    batch: int = BATCH,
    signals: bool = True,
    flag_of: FlagOf | None = None,
) -> Iterator[list[ConversationRow]]:
    """Yield batches of fully loaded conversations (turns, answers, decisions, visible votes, ratings).

    ``signals=False`` leaves each decision's stored signals empty ({}), for formats that never show them;
    ``flag_of`` gives each vote's quality flags (``feedback.vote_flags.flag_lookup``).
    """
    engine = get_engine(url)
    clean = _Cleaner(tally, redact_pii)
    participant = lru_cache(maxsize=MEMO)(lambda participant_id: pseudonymize(participant_id, salt))
    statements = {name: _Query(stmt, engine.dialect) for name, stmt in _statements(signals).items()}
    with engine.connect() as ids_connection, engine.connect() as connection:
        stream = ids_connection.execution_options(stream_results=True, yield_per=batch).execute(
            conversation_query(filters).order_by(Conversation.id)
        )
        for partition in stream.partitions(batch):
            ids = [row[0] for row in partition]
            yield _load(connection, statements, ids, participant, clean, tally, signals, flag_of)


_IDS = bindparam("ids", expanding=True)  # one cached statement per table, whatever the batch's ids
_EXPANDED = "(__[POSTCOMPILE_ids])"  # where SQLAlchemy's compiled SQL expands the ids


class _Query:
    """One per-table select of a batch. On SQLite, its compiled SQL runs straight on the driver's cursor:
    SQLAlchemy's per-row result processing and per-call compilation were a fifth of an export's time,
    and the few columns it would convert (DATETIME text, BOOLEAN 0/1, NUMERIC) go through ``_as_utc``,
    ``_bool`` and ``_money`` in ``_load`` with SQLAlchemy's own rules. Elsewhere SQLAlchemy runs it."""

    def __init__(self, stmt: Select, dialect: Any) -> None:
        self.stmt, self.sql = stmt, None
        if dialect.name == "sqlite" and dialect.paramstyle == "qmark":
            compiled = stmt.compile(dialect=dialect)
            if set(compiled.params) == {"ids"} and str(compiled).count(_EXPANDED) == 1:
                self.sql = str(compiled)

    def rows(self, connection: Any, ids: list[int]) -> list[Any]:
        if self.sql is None:
            return connection.execute(self.stmt, {"ids": ids}).all()
        cursor = connection.connection.driver_connection.cursor()
        try:
            return cursor.execute(self.sql.replace(_EXPANDED, "(" + ",".join("?" * len(ids)) + ")"), ids).fetchall()
        finally:
            cursor.close()


def _statements(signals: bool) -> dict[str, Select]:
    """The per-table selects of one batch, built once per export (the ids are a bound parameter)."""
    in_batch = Turn.conversation_id.in_(_IDS)
    return {
        "conversations": select(
            Conversation.id,
            Event.code,
            Event.region,
            Event.id,
            Conversation.participant_id,
            Conversation.handoff_side,
            Conversation.category,
            Conversation.created_at,
        )
        .join(Event, Event.id == Conversation.event_id)
        .where(Conversation.id.in_(_IDS))
        .order_by(Conversation.id),
        "turns": select(
            Turn.id, Turn.conversation_id, Turn.index, Turn.prompt, Turn.language, Turn.category, Turn.created_at
        )
        .where(in_batch)
        .order_by(Turn.conversation_id, Turn.index),
        "answers": select(
            Answer.turn_id,
            Answer.arm,
            Answer.source,
            Answer.text,
            Answer.model,
            Answer.tokens_out,
            Answer.latency_ms,
            Answer.cost,
            Answer.error_kind,
            Answer.energy_wh,
        )
        .join(Turn, Turn.id == Answer.turn_id)
        .where(in_batch),
        "decisions": select(
            HandoffDecision.turn_id,
            HandoffDecision.policy,
            HandoffDecision.threshold,
            HandoffDecision.score,
            HandoffDecision.handed_off,
            HandoffDecision.blocked_by,
            HandoffDecision.shadow_propensity,
            cast(HandoffDecision.signals, Text) if signals else null(),
        )
        .join(Turn, Turn.id == HandoffDecision.turn_id)
        .where(in_batch),
        "votes": select(
            Vote.id,
            Vote.turn_id,
            Vote.winner,
            Vote.winner_arm,
            Vote.comment,
            Vote.final,
            Vote.created_at,
            Vote.time_to_vote_ms,
            Vote.display,
        )
        .where(Vote.conversation_id.in_(_IDS), vote_not_hidden())
        .order_by(Vote.id),
        "ratings": select(Rating.vote_id, Rating.arm, Rating.stars, cast(Rating.tags, Text)).where(
            Rating.vote_id.in_(_IDS)
        ),
    }


def _json(raw: str | None) -> Any:
    """JSON columns are read as text and decoded here: orjson is several times faster than the default."""
    return None if raw is None else orjson.loads(raw)


def _load(
    connection,
    statements: dict[str, _Query],
    ids: list[int],
    participant,
    clean: _Cleaner,
    tally: Tally,
    signals: bool,
    flag_of=None,
) -> list[ConversationRow]:  # noqa: ANN001
    """Fill one batch with one query per table; rows are plain tuples (no ORM objects, no per-row attribute lookups)."""
    conversations: dict[int, ConversationRow] = {}
    event_ids = tally.event_ids
    for cid, code, region, event_id, participant_id, side, category, created in statements["conversations"].rows(
        connection, ids
    ):
        conversations[cid] = ConversationRow(
            cid, code, region, participant(participant_id), side, category, _as_utc(created)
        )
        event_ids.add(event_id)
    turns: dict[int, TurnRow] = {}
    rows = statements["turns"].rows(connection, ids)
    prompts = clean.many([row[3] for row in rows])  # texts are redacted a batch at a time
    for (tid, cid, index, _, language, category, created), prompt in zip(rows, prompts, strict=True):
        turn = TurnRow(tid, index, prompt, language, category, _as_utc(created))
        turns[tid] = turn
        conversations[cid].turns.append(turn)
    rows = statements["answers"].rows(connection, ids)
    texts = clean.many([row[3] for row in rows])
    for (tid, arm, source, _, model, tokens_out, latency_ms, cost, error_kind, energy_wh), text in zip(
        rows, texts, strict=True
    ):
        turns[tid].answers[arm] = AnswerRow(
            arm,
            source,
            text,
            model,
            tokens_out,
            latency_ms,
            _money(cost),
            error_kind,
            energy_wh,
        )
    for tid, policy, threshold, score, handed_off, blocked_by, propensity, stored in statements["decisions"].rows(
        connection, ids
    ):
        turns[tid].decision = DecisionRow(
            policy,
            threshold,
            score,
            _bool(handed_off),
            blocked_by,
            propensity,
            _cleaned(_json(stored) or {}, clean) if signals else {},
        )
    votes: dict[int, VoteRow] = {}
    rows = statements["votes"].rows(connection, ids)
    comments = iter(clean.many([row[4] for row in rows if row[4]]))  # an empty comment is no comment
    flags = flag_of([row[0] for row in rows]) if flag_of is not None else [None] * len(rows)
    for (vid, tid, winner, winner_arm, comment, final, created, time_to_vote, display), vote_flags in zip(
        rows, flags, strict=True
    ):
        vote = VoteRow(
            vid,
            winner,
            winner_arm,
            next(comments) if comment else None,
            _bool(final),
            _as_utc(created),
            time_to_vote_ms=time_to_vote,
            display=display,
            flags=vote_flags,
        )
        votes[vid] = vote
        turns[tid].votes.append(vote)
    if votes:
        tag_lists: dict[str | None, list[str]] = {}  # few distinct tag sets: each decoded once per batch
        for vid, arm, stars, tags in statements["ratings"].rows(connection, list(votes)):
            if (tag_list := tag_lists.get(tags)) is None:
                tag_list = tag_lists[tags] = list(_json(tags) or [])
            votes[vid].ratings[arm] = RatingRow(stars, tag_list)
    tally.conversations += len(conversations)
    tally.turns += len(turns)
    tally.votes += len(votes)
    return list(conversations.values())
