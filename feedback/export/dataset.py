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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

import numpy as np
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


@dataclass(frozen=True, slots=True)
class FlagColumns:
    """The quality flags of a batch's votes, in vote order, as arrays: ``found`` is False for a vote without
    flags (null), ``bits`` holds too_fast (1), flagged_participant (2), reveals_origin (4) and duplicate (8),
    ``reasons`` the participant_flags text (a str per vote)."""

    found: np.ndarray
    bits: np.ndarray
    reasons: np.ndarray


FlagOf = Callable[[Sequence[int]], FlagColumns]  # a batch of vote ids -> their flags, in order


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


def iter_batches(
    url: str,
    filters: ExportFilters,
    *,
    salt: bytes,
    redact_pii: bool,
    tally: Tally,
    batch: int = BATCH,
    signals: bool = True,
    flag_of: FlagOf | None = None,
) -> Iterator[Batch]:
    """Yield batches of fully loaded conversations (turns, answers, decisions, visible votes, ratings) as columns.

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


# the fields of each table's rows, in the order of ``_statements``' selects
FIELDS: dict[str, tuple[str, ...]] = {
    "conversations": ("id", "event", "region", "event_id", "participant_id", "handoff_side", "category", "created_at"),
    "turns": ("id", "conversation_id", "index", "prompt", "language", "category", "created_at"),
    "answers": (
        "turn_id",
        "arm",
        "source",
        "text",
        "model",
        "tokens_out",
        "latency_ms",
        "cost",
        "error_kind",
        "energy_wh",
    ),
    "decisions": ("turn_id", "policy", "threshold", "score", "handed_off", "blocked_by", "propensity", "signals"),
    "votes": (
        "id",
        "turn_id",
        "winner",
        "winner_arm",
        "comment",
        "final",
        "created_at",
        "time_to_vote_ms",
        "display",
    ),
    "ratings": ("vote_id", "arm", "stars", "tags"),
}


@dataclass(slots=True)
class Batch:
    """One batch of conversations read as columns: per table (``FIELDS``) a tuple of values per field, rows
    in query order, as the driver returns them (SQLite's DATETIME text and 0/1 booleans, NUMERIC as stored:
    ``conversation_rows`` and ``feedback.export.flat.vote_table`` convert them with SQLAlchemy's rules).
    Already done here, once for every format: texts redacted, ``participant`` re-hashed, decision signals
    decoded (and redacted), vote flags looked up (``flags``, None when the format carries none)."""

    conversations: dict[str, Sequence[Any]]
    turns: dict[str, Sequence[Any]]
    answers: dict[str, Sequence[Any]]
    decisions: dict[str, Sequence[Any]]
    votes: dict[str, Sequence[Any]]
    ratings: dict[str, Sequence[Any]]
    flags: FlagColumns | None

    def __len__(self) -> int:
        return len(self.conversations["id"])


def _columns(table: str, rows: list[Any]) -> dict[str, Sequence[Any]]:
    names = FIELDS[table]
    return dict(zip(names, zip(*rows, strict=True), strict=True)) if rows else {name: () for name in names}


def tag_list(raw: str | None) -> list[str]:
    """A rating's reason tags from their stored JSON text (None: no tags)."""
    return list(_json(raw) or [])


def _load(
    connection,
    statements: dict[str, _Query],
    ids: list[int],
    participant,
    clean: _Cleaner,
    tally: Tally,
    signals: bool,
    flag_of=None,
) -> Batch:  # noqa: ANN001
    """Fill one batch with one query per table, read into columns (no per-row objects)."""
    conversations = _columns("conversations", statements["conversations"].rows(connection, ids))
    conversations["participant"] = [participant(participant_id) for participant_id in conversations["participant_id"]]
    tally.event_ids.update(conversations["event_id"])
    turns = _columns("turns", statements["turns"].rows(connection, ids))
    turns["prompt"] = clean.many(list(turns["prompt"]))  # texts are redacted a batch at a time
    answers = _columns("answers", statements["answers"].rows(connection, ids))
    answers["text"] = clean.many(list(answers["text"]))
    decisions = _columns("decisions", statements["decisions"].rows(connection, ids))
    decisions["signals"] = (
        [_cleaned(_json(stored) or {}, clean) for stored in decisions["signals"]]
        if signals
        else [{} for _ in decisions["signals"]]
    )
    votes = _columns("votes", statements["votes"].rows(connection, ids))
    comments = iter(clean.many([comment for comment in votes["comment"] if comment]))  # empty is no comment
    votes["comment"] = [next(comments) if comment else None for comment in votes["comment"]]
    ratings = _columns("ratings", statements["ratings"].rows(connection, list(votes["id"])) if votes["id"] else [])
    tally.conversations += len(set(conversations["id"]))
    tally.turns += len(set(turns["id"]))
    tally.votes += len(set(votes["id"]))
    flags = flag_of(votes["id"]) if flag_of is not None else None
    return Batch(conversations, turns, answers, decisions, votes, ratings, flags)


def conversation_rows(batch: Batch) -> list[ConversationRow]:
    """The batch as nested row objects (conversation -> turns -> answers, decision, votes -> ratings), for the
    formats that write a conversation's structure (jsonl, arena, dpo)."""
    conversations: dict[int, ConversationRow] = {}
    c = batch.conversations
    for cid, code, region, participant, side, category, created in zip(
        c["id"],
        c["event"],
        c["region"],
        c["participant"],
        c["handoff_side"],
        c["category"],
        c["created_at"],
        strict=True,
    ):
        conversations[cid] = ConversationRow(cid, code, region, participant, side, category, _as_utc(created))
    turns: dict[int, TurnRow] = {}
    t = batch.turns
    for tid, cid, index, prompt, language, category, created in zip(*t.values(), strict=True):
        turn = TurnRow(tid, index, prompt, language, category, _as_utc(created))
        turns[tid] = turn
        conversations[cid].turns.append(turn)
    for tid, arm, source, text, model, tokens_out, latency_ms, cost, error_kind, energy_wh in zip(
        *batch.answers.values(), strict=True
    ):
        turns[tid].answers[arm] = AnswerRow(
            arm, source, text, model, tokens_out, latency_ms, _money(cost), error_kind, energy_wh
        )
    for tid, policy, threshold, score, handed_off, blocked_by, propensity, stored in zip(
        *batch.decisions.values(), strict=True
    ):
        turns[tid].decision = DecisionRow(policy, threshold, score, _bool(handed_off), blocked_by, propensity, stored)
    votes: dict[int, VoteRow] = {}
    v = batch.votes
    for (vid, tid, winner, winner_arm, comment, final, created, time_to_vote, display), vote_flags in zip(
        zip(*v.values(), strict=True), _flag_rows(batch.flags, len(v["id"])), strict=True
    ):
        vote = VoteRow(
            vid,
            winner,
            winner_arm,
            comment,
            _bool(final),
            _as_utc(created),
            time_to_vote_ms=time_to_vote,
            display=display,
            flags=vote_flags,
        )
        votes[vid] = vote
        turns[tid].votes.append(vote)
    tag_lists: dict[str | None, list[str]] = {}  # few distinct tag sets: each decoded once per batch
    for vid, arm, stars, tags in zip(*batch.ratings.values(), strict=True):
        if (decoded := tag_lists.get(tags)) is None:
            decoded = tag_lists[tags] = tag_list(tags)
        votes[vid].ratings[arm] = RatingRow(stars, decoded)
    return list(conversations.values())


def _flag_rows(flags: FlagColumns | None, n: int) -> list[VoteFlags | None]:
    """Per vote its ``VoteFlags`` (one shared object per distinct value), or None without flags."""
    if flags is None:
        return [None] * n
    shared: dict[tuple[int, str], VoteFlags] = {}

    def one(b: int, why: str) -> VoteFlags:
        return shared.setdefault((b, why), VoteFlags(bool(b & 1), bool(b & 2), why, bool(b & 4), bool(b & 8)))

    return [
        (shared.get((b, why)) or one(b, why)) if hit else None
        for hit, b, why in zip(flags.found.tolist(), flags.bits.tolist(), flags.reasons.tolist(), strict=True)
    ]
