"""What an export may contain, read in batches: consented, visible conversations with their turns.

Conversation ids are streamed (server-side cursor on PostgreSQL; on a SQLite file read at once, 8 bytes each) and
each batch of ids is filled with one query per table into typed Arrow columns, so memory stays bounded by the
batch size whatever the size of the database. Redaction and participant re-hashing happen here, once, so
every format gets the same treatment.
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
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Select, Text, bindparam, cast, func, null, select

from db.arrow import SQLiteArrow, sqlite_arrow, sqlite_sql
from db.models import Answer, Conversation, Event, HandoffDecision, Rating, Turn, Vote
from db.session import get_engine
from db.visibility import counted_conversations, vote_not_hidden
from feedback.redaction import SCREEN, redact, screen

BATCH = 2000
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

    def array(self, texts: pa.Array) -> pa.Array:
        """``many`` on a column: screened in C++ (``feedback.redaction.SCREEN``), the few hits redacted in Python."""
        if not self.redact_pii or not len(texts):
            return texts
        hits = pc.match_substring_regex(texts, SCREEN).fill_null(False)
        at = np.flatnonzero(hits.to_numpy(zero_copy_only=False))
        if not at.size:
            return texts
        found = pc.dictionary_encode(texts.take(pa.array(at)))  # a repeated text is redacted once
        occurrences = np.bincount(found.indices.to_numpy(zero_copy_only=False), minlength=len(found.dictionary))
        cleaned = []
        for text, n in zip(found.dictionary.to_pylist(), occurrences.tolist(), strict=True):
            out, kinds = self._redacted(text)
            for kind, count in kinds:  # still tallied per occurrence
                self.tally.redactions[kind] += count * n
            cleaned.append(out)
        return replaced(texts, at, pa.array(cleaned, texts.type).take(found.indices))


def replaced(texts: pa.Array, rows: np.ndarray, replacements: pa.Array) -> pa.Array:
    """``texts`` with ``rows`` (ascending) replaced by ``replacements``, in one ``take`` (``replace_with_mask``
    was several times slower on long texts)."""
    at = np.arange(len(texts), dtype=np.int64)
    at[rows] = len(texts) + np.arange(len(rows), dtype=np.int64)
    return pa.concat_arrays([texts, replacements.cast(texts.type)]).take(pa.array(at))


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


def reads_arrow(url: str) -> bool:
    """Whether ``iter_batches`` reads this database through Arrow (a SQLite file): it can then read in parts."""
    arrow = sqlite_arrow(get_engine(url))
    if arrow is None:
        return False
    arrow.close()
    return True


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
    skip: frozenset[str] = frozenset(),
    part: tuple[int, int] = (0, 1),
) -> Iterator[Batch]:
    """Yield batches of fully loaded conversations (turns, answers, decisions, visible votes, ratings) as columns.

    ``signals=False`` leaves each decision's stored signals empty ({}), for formats that never show them;
    ``flag_of`` gives each vote's quality flags (``feedback.vote_flags.flag_lookup``); the tables in ``skip``
    (``decisions``, ``ratings``) are not read: a format that never uses them gets them empty. ``part=(k, n)``
    reads only the k-th of n contiguous slices of the selection in id order (``feedback.export.parts``; a SQLite
    file only, where the ids are read at once), so the parts' batches in turn are the whole selection's.
    """
    engine = get_engine(url)
    clean = _Cleaner(tally, redact_pii)
    participant = lru_cache(maxsize=MEMO)(lambda participant_id: pseudonymize(participant_id, salt))
    arrow = sqlite_arrow(engine)
    statements = {
        name: _Query(name, stmt, engine.dialect, arrow, read=name not in skip)
        for name, stmt in _statements(signals).items()
    }
    selection = conversation_query(filters).order_by(Conversation.id)
    compiled = sqlite_sql(selection.with_only_columns(Conversation.id), engine) if arrow is not None else None
    try:
        if compiled is not None and all(query.sql is not None for query in statements.values()):
            # every id at once, as one int64 column (8 bytes a conversation), and every table through ADBC's
            # read-only connection: no read-write sqlite3 connection is opened (a worker process's, closed as it
            # ends, would checkpoint and remove the WAL under the app's connections: ``feedback.export.parts``)
            every = arrow.table(*compiled).column(0).combine_chunks()
            k, n = part
            every = every.slice(len(every) * k // n, len(every) * (k + 1) // n - len(every) * k // n)
            for start in range(0, len(every), batch):
                ids = every.slice(start, batch).to_pylist()
                yield _load(None, statements, ids, participant, clean, tally, signals, flag_of)
            return
        if part != (0, 1):
            raise ValueError("an export reads in parts only from a SQLite file, every table through ADBC")
        with engine.connect() as connection:
            if compiled is not None:
                every = arrow.table(*compiled).column(0).combine_chunks()
                for start in range(0, len(every), batch):
                    ids = every.slice(start, batch).to_pylist()
                    yield _load(connection, statements, ids, participant, clean, tally, signals, flag_of)
                return
            with engine.connect() as ids_connection:
                stream = ids_connection.execution_options(stream_results=True, yield_per=batch).execute(selection)
                for partition in stream.partitions(batch):
                    ids = [row[0] for row in partition]
                    yield _load(connection, statements, ids, participant, clean, tally, signals, flag_of)
    finally:
        if arrow is not None:
            arrow.close()


_IDS = bindparam("ids", expanding=True)  # one cached statement per table, whatever the batch's ids
_EXPANDED = "(__[POSTCOMPILE_ids])"  # where SQLAlchemy's compiled SQL expands the ids


class _Query:
    """One per-table select of a batch, read into ``TYPES``' Arrow columns. On a SQLite file its compiled SQL
    runs on ADBC's SQLite driver (``db.arrow``): Arrow arrays filled in C, no Python object per value. Else
    (PostgreSQL) SQLAlchemy runs it and the rows are turned into the same columns. Either way the few
    columns SQLAlchemy would convert (DATETIME text, BOOLEAN 0/1, NUMERIC) are converted with its rules
    (``_as_utc``, ``_bool``, ``_money``), column-wise."""

    def __init__(
        self, table: str, stmt: Select, dialect: Any, arrow: SQLiteArrow | None = None, read: bool = True
    ) -> None:
        self.table, self.stmt, self.sql, self.arrow, self.read = table, stmt, None, arrow, read
        if dialect.name == "sqlite" and dialect.paramstyle == "qmark":
            compiled = stmt.compile(dialect=dialect)
            if set(compiled.params) == {"ids"} and str(compiled).count(_EXPANDED) == 1:
                self.sql = str(compiled)

    def rows(self, connection: Any, ids: list[int]) -> list[Any]:
        """The rows as the driver returns them (SQLite's raw values, on its own cursor; else SQLAlchemy's)."""
        if self.sql is None:
            return connection.execute(self.stmt, {"ids": ids}).all()
        cursor = connection.connection.driver_connection.cursor()
        try:
            return cursor.execute(self._expanded(ids), ids).fetchall()
        finally:
            cursor.close()

    def _expanded(self, ids: list[int]) -> str:
        return self.sql.replace(_EXPANDED, "(" + ",".join("?" * len(ids)) + ")")

    def columns(self, connection: Any, ids: list[int]) -> dict[str, pa.Array]:
        """The rows as one typed Arrow array per field (``TYPES``)."""
        types = TYPES[self.table]
        if not ids or not self.read:
            return {name: pa.array([], kind) for name, kind in types.items()}
        if self.sql is not None and self.arrow is not None:
            # the ids written into the SQL (ints from our own query): ADBC's Python binding of a batch's
            # parameters cost more than the read itself
            read = self.arrow.table(self.sql.replace(_EXPANDED, "(" + ",".join(map(str, map(int, ids))) + ")"))
            return {
                name: _typed(column.combine_chunks(), types[name], name)
                for name, column in zip(types, read.columns, strict=True)
            }
        rows = self.rows(connection, ids)
        values = zip(*rows, strict=True) if rows else ([] for _ in types)
        return {name: _typed(list(column), types[name], name) for name, column in zip(types, values, strict=True)}


_SQLITE_TIME = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{6})?$"  # how SQLAlchemy stores DATETIME on SQLite
UTC_TIME = pa.timestamp("us", tz="UTC")


def utc_times(values: Sequence[Any] | pa.Array) -> pa.Array:
    """DATETIME values as ``_as_utc`` reads them (naive is UTC, aware is converted), column-wise: SQLite's
    text in SQLAlchemy's storage format is parsed by Arrow, datetimes (PostgreSQL) converted by Arrow,
    anything else value by value."""
    if isinstance(values, pa.Array):
        if values.null_count == len(values):
            return pa.nulls(len(values), UTC_TIME)
        if pa.types.is_string(values.type) and pc.all(pc.match_substring_regex(values, _SQLITE_TIME)).as_py():
            return values.cast(pa.timestamp("us")).cast(UTC_TIME)  # naive -> UTC: the same instants, no shift
        if pa.types.is_timestamp(values.type) and values.type.tz is not None:
            return values.cast(UTC_TIME)
        values = values.to_pylist()
    kinds = set(map(type, values))
    if kinds == {str}:
        return utc_times(pa.array(values, pa.string()))
    if kinds <= {dt.datetime}:
        return pa.array(values, UTC_TIME)
    return pa.array([None if value is None else _as_utc(value) for value in values], UTC_TIME)


def _typed(values: Sequence[Any] | pa.Array, kind: pa.DataType, name: str) -> pa.Array:
    """One field's values (the driver's Python values, or ADBC's inferred Arrow column) as ``kind``."""
    if kind == UTC_TIME:
        return utc_times(values)
    if name == "cost":  # NUMERIC(12, 6): ``_money``'s rounding, on the values that are there
        if not isinstance(values, pa.Array):
            return pa.array([_money(value) for value in values], kind)
        valid = values.is_valid()
        if not pc.any(valid).as_py():
            return pa.nulls(len(values), kind)
        rounded = pa.array([_money(value) for value in values.filter(valid).to_pylist()], kind)
        return pc.replace_with_mask(values.cast(kind), valid, rounded)
    if not isinstance(values, pa.Array):
        values = pa.array(values)  # bool, int, float, str, Decimal-free: the driver's own types
    return values if values.type == kind else values.cast(kind)


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


_I, _F, _S, _B = pa.int64(), pa.float64(), pa.string(), pa.bool_()
# each table's fields, in the order of ``_statements``' selects, with the Arrow type a batch holds them in
TYPES: dict[str, dict[str, pa.DataType]] = {
    "conversations": {
        "id": _I,
        "event": _S,
        "region": _S,
        "event_id": _I,
        "participant_id": _I,
        "handoff_side": _S,
        "category": _S,
        "created_at": UTC_TIME,
    },
    "turns": {
        "id": _I,
        "conversation_id": _I,
        "index": _I,
        "prompt": _S,
        "language": _S,
        "category": _S,
        "created_at": UTC_TIME,
    },
    "answers": {
        "turn_id": _I,
        "arm": _S,
        "source": _S,
        "text": _S,
        "model": _S,
        "tokens_out": _I,
        "latency_ms": _F,
        "cost": _F,
        "error_kind": _S,
        "energy_wh": _F,
    },
    "decisions": {
        "turn_id": _I,
        "policy": _S,
        "threshold": _F,
        "score": _F,
        "handed_off": _B,
        "blocked_by": _S,
        "propensity": _F,
        "signals": _S,
    },
    "votes": {
        "id": _I,
        "turn_id": _I,
        "winner": _S,
        "winner_arm": _S,
        "comment": _S,
        "final": _B,
        "created_at": UTC_TIME,
        "time_to_vote_ms": _F,
        "display": _S,
    },
    "ratings": {"vote_id": _I, "arm": _S, "stars": _I, "tags": _S},
}
FIELDS: dict[str, tuple[str, ...]] = {table: tuple(types) for table, types in TYPES.items()}


@dataclass(slots=True)
class Batch:
    """One batch of conversations read as columns: per table (``TYPES``) an Arrow array per field, rows in
    query order, already converted with SQLAlchemy's rules (UTC times, booleans, NUMERIC rounding).
    Already done here, once for every format: texts redacted, ``participant`` re-hashed, vote flags looked up
    (``flags``, None when the format carries none). ``signals`` holds each decision's stored signals, redacted,
    as the JSON text orjson writes for them (None for formats that never write them)."""

    conversations: dict[str, pa.Array]
    turns: dict[str, pa.Array]
    answers: dict[str, pa.Array]
    decisions: dict[str, pa.Array]
    votes: dict[str, pa.Array]
    ratings: dict[str, pa.Array]
    flags: FlagColumns | None
    signals: pa.Array | None = None

    def signal_texts(self) -> pa.Array:
        """Per decision its signals as orjson writes them (``{}`` each where the format did not read them)."""
        if self.signals is not None:
            return self.signals
        return pa.nulls(len(self.decisions["turn_id"]), _S).fill_null("{}")

    def __len__(self) -> int:
        return len(self.conversations["id"])


def tag_list(raw: str | None) -> list[str]:
    """A rating's reason tags from their stored JSON text (None: no tags)."""
    return list(_json(raw) or [])


def _hashed(ids: pa.Array, participant: Callable[[int], str]) -> pa.Array:
    """Each participant id's salted hash, computed once per distinct id."""
    distinct = pc.unique(ids)
    hashes = pa.array([participant(value) for value in distinct.to_pylist()], pa.string())
    return hashes.take(pc.index_in(ids, value_set=distinct))


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
    conversations = statements["conversations"].columns(connection, ids)
    conversations["participant"] = _hashed(conversations["participant_id"], participant)
    tally.event_ids.update(pc.unique(conversations["event_id"]).to_pylist())
    turns = statements["turns"].columns(connection, ids)
    turns["prompt"] = clean.array(turns["prompt"])  # texts are redacted a batch at a time
    answers = statements["answers"].columns(connection, ids)
    answers["text"] = clean.array(answers["text"])
    decisions = statements["decisions"].columns(connection, ids)
    decoded = _signals(decisions["signals"], clean) if signals else None
    votes = statements["votes"].columns(connection, ids)
    comment = votes["comment"]
    votes["comment"] = clean.array(pc.if_else(pc.equal(comment, ""), pa.scalar(None, _S), comment))  # empty: none
    ratings = statements["ratings"].columns(connection, votes["id"].to_pylist())
    tally.conversations += pc.count_distinct(conversations["id"]).as_py()
    tally.turns += pc.count_distinct(turns["id"]).as_py()
    tally.votes += pc.count_distinct(votes["id"]).as_py()
    flags = flag_of(votes["id"].to_numpy()) if flag_of is not None else None
    return Batch(conversations, turns, answers, decisions, votes, ratings, flags, decoded)


# JSON that holds a string value (or a list) somewhere: only those signals can need redacting (keys never are)
_TEXT_INSIDE = r'^\s*"|\[|:\s*"'
# an object of plain keys and numbers as Python's json.dumps writes it (the only writer: SQLAlchemy's JSON type):
# no string values, no escapes, numbers without exponents (where repr writes a float plainly, orjson writes the
# same digits), single spaces after separators. Its orjson text is the stored text without the spaces.
_PLAIN_OBJECT = r'^\{(?:[ {},:]|-?[0-9]+(?:\.[0-9]+)?|true|false|null|"[A-Za-z0-9_.\-]*")*\}$'


def _signals(stored: pa.Array, clean: _Cleaner) -> pa.Array:
    """Each decision's stored signals as orjson writes them once decoded (``{}`` for none), strings inside
    redacted: plain objects (``_PLAIN_OBJECT``, nothing to redact) rewritten in Arrow, the rest decoded (in
    one orjson call), redacted where they hold text (``_TEXT_INSIDE``) and written by orjson."""
    walk = pc.match_substring_regex(stored, _TEXT_INSIDE).fill_null(False)
    plain = pc.and_(pc.match_substring_regex(stored, _PLAIN_OBJECT).fill_null(False), pc.invert(walk))
    texts = pc.replace_substring(stored, " ", "")
    rows = np.flatnonzero(~plain.to_numpy(zero_copy_only=False))
    if not rows.size:
        return texts
    picked = stored.take(pa.array(rows))
    raw = picked.to_pylist()
    if picked.null_count == 0:  # decoded in one call: a JSON array of the stored texts
        decoded = orjson.loads("[" + ",".join(raw) + "]")
    else:
        decoded = [None if text is None else _json(text) for text in raw]
    hold_text = walk.take(pa.array(rows)).to_pylist()
    written = pa.array(
        [
            orjson.dumps(_cleaned(value or {}, clean) if text_inside else (value or {}))
            for value, text_inside in zip(decoded, hold_text, strict=True)
        ],
        pa.binary(),
    ).cast(_S)
    return replaced(texts, rows, written)


def _py(column: pa.Array) -> list[Any]:
    """A column's Python values; UTC times as aware datetimes (``dt.UTC``), made from numpy's naive ones."""
    if column.type == UTC_TIME:
        naive = column.cast(pa.timestamp("us")).to_numpy(zero_copy_only=False).astype(object)
        return [None if value is None else value.replace(tzinfo=dt.UTC) for value in naive]
    return column.to_pylist()


def _rows(table: dict[str, pa.Array], names: Sequence[str] | None = None) -> Iterator[tuple]:
    return zip(*(_py(table[name]) for name in (names or table)), strict=True)


def conversation_rows(batch: Batch) -> list[ConversationRow]:
    """The batch as nested row objects (conversation -> turns -> answers, decision, votes -> ratings): the
    row-by-row definition of the JSON formats, which the tests hold their column-wise writers to."""
    conversations: dict[int, ConversationRow] = {}
    for cid, code, region, participant, side, category, created in _rows(
        batch.conversations, ("id", "event", "region", "participant", "handoff_side", "category", "created_at")
    ):
        conversations[cid] = ConversationRow(cid, code, region, participant, side, category, created)
    turns: dict[int, TurnRow] = {}
    for tid, cid, index, prompt, language, category, created in _rows(batch.turns):
        turn = TurnRow(tid, index, prompt, language, category, created)
        turns[tid] = turn
        conversations[cid].turns.append(turn)
    for tid, arm, source, text, model, tokens_out, latency_ms, cost, error_kind, energy_wh in _rows(batch.answers):
        turns[tid].answers[arm] = AnswerRow(
            arm, source, text, model, tokens_out, latency_ms, cost, error_kind, energy_wh
        )
    names = FIELDS["decisions"][:-1]
    for (tid, policy, threshold, score, handed_off, blocked_by, propensity), stored in zip(
        _rows(batch.decisions, names), map(orjson.loads, batch.signal_texts().to_pylist()), strict=True
    ):
        turns[tid].decision = DecisionRow(policy, threshold, score, handed_off, blocked_by, propensity, stored)
    votes: dict[int, VoteRow] = {}
    for (vid, tid, winner, winner_arm, comment, final, created, time_to_vote, display), vote_flags in zip(
        _rows(batch.votes), _flag_rows(batch.flags, len(batch.votes["id"])), strict=True
    ):
        vote = VoteRow(
            vid,
            winner,
            winner_arm,
            comment,
            final,
            created,
            time_to_vote_ms=time_to_vote,
            display=display,
            flags=vote_flags,
        )
        votes[vid] = vote
        turns[tid].votes.append(vote)
    tag_lists: dict[str | None, list[str]] = {}  # few distinct tag sets: each decoded once per batch
    for vid, arm, stars, tags in _rows(batch.ratings):
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
