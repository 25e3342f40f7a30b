"""Per-vote rows for the research analyses (style control, latency, vote quality, judges).

The visible-conversation selection comes in as a subquery from the caller (one rule for which votes
count), so this module only joins what one vote saw: both arms' answers with timing and style.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Select,
    Subquery,
    Text,
    and_,
    cast,
    func,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.orm import aliased

from db.arrow import ArrowReadFailed, SQLiteArrow, json_objects, sqlite_arrow, sqlite_sql
from db.models import Answer, Conversation, Event, HandoffDecision, JudgeVerdict, Turn, Vote

VOTE_COLUMNS = (
    "vote_id",
    "participant_id",
    "event",
    "region",
    "language",
    "category",
    "prompt",
    "winner",
    "winner_arm",
    "handoff_side",
    "handed_off",
    "policy",
    "threshold",
    "model_off",
    "time_to_vote_ms",
    "display",
    "created_at",
    "on_tokens",
    "on_ttft_ms",
    "on_latency_ms",
    "on_style",
    "on_reveals",
    "off_tokens",
    "off_ttft_ms",
    "off_latency_ms",
    "off_style",
    "off_reveals",
)


# low-cardinality labels held as categoricals (a small code per vote, each distinct string once); the prompt too,
# as votes repeat prompts. Categories are sorted, so grouping orders them as it orders strings.
CATEGORICAL = frozenset(
    {"event", "region", "language", "category", "prompt", "winner", "winner_arm", "handoff_side", "policy", "model_off"}
)
STYLE_COLUMNS = ("on_style", "off_style")
RELEASE_EVERY = 20  # chunks read between calls of ``vote_rows``' ``release``
_FIRST_VOTE_ID = str(-(2**63))  # the stand-in row's vote id in ``vote_column_arrays``' Arrow read: below any vote's


def style_column(column: str, feature: str) -> str:
    """The frame's column for one style feature of one arm (``on_style`` -> ``on_style.tokens``)."""
    return f"{column}.{feature}"


def _vote_select(visible: Subquery, columns: Sequence[str], *, scan_votes: bool = False) -> Select:
    """The per-vote select of ``columns`` (a subset of ``VOTE_COLUMNS``), without an order.

    ``scan_votes`` (SQLite): the votes table read in id order, each vote's conversation looked up, instead of
    the votes of each visible conversation through the conversation index: the same rows, already in vote
    order, where the other plan sorts the whole wide result before its first row (for most of the votes:
    a report without filters; for a small part, the index is cheaper)."""
    unknown = set(columns) - set(VOTE_COLUMNS)
    if unknown:
        raise ValueError(f"not vote columns: {sorted(unknown)}")
    on, off = aliased(Answer), aliased(Answer)
    every = dict(
        zip(
            VOTE_COLUMNS,
            (
                Vote.id,
                Vote.participant_id,
                Event.code,
                Event.region,
                func.coalesce(Turn.language, "unknown"),
                func.coalesce(Turn.category, Conversation.category, "unknown"),
                Turn.prompt,
                Vote.winner,
                Vote.winner_arm,
                Conversation.handoff_side,
                HandoffDecision.handed_off,
                HandoffDecision.policy,
                HandoffDecision.threshold,
                off.model,
                Vote.time_to_vote_ms,
                Vote.display,
                Vote.created_at,
                on.tokens_out,
                on.ttft_ms,
                on.latency_ms,
                cast(on.style, Text),  # decoded per chunk into float columns, not one dict per vote
                on.reveals_origin,
                off.tokens_out,
                off.ttft_ms,
                off.latency_ms,
                cast(off.style, Text),
                off.reveals_origin,
            ),
            strict=True,
        )
    )
    stmt = select(*(every[name].label(name) for name in columns))
    return (
        (stmt.select_from(Vote) if scan_votes else stmt)
        # ``+ 0``: SQLite then cannot drive the join through ix_votes_conversation_id, so it scans the votes
        .join(
            visible,
            visible.c.id == (Vote.conversation_id + literal_column("0") if scan_votes else Vote.conversation_id),
        )
        .join(Conversation, Conversation.id == Vote.conversation_id)
        .join(Event, Event.id == Conversation.event_id)
        .join(Turn, Turn.id == Vote.turn_id)
        .outerjoin(HandoffDecision, HandoffDecision.turn_id == Turn.id)
        .outerjoin(on, and_(on.turn_id == Turn.id, on.arm == "on"))
        .outerjoin(off, and_(off.turn_id == Turn.id, off.arm == "off"))
        .where(Vote.hidden_at.is_(None))
    )


def vote_rows(
    connection: Connection,
    visible: Subquery,
    chunk: int = 5_000,
    columns: Sequence[str] = VOTE_COLUMNS,
    style_features: Sequence[str] = (),
    release: Callable[[], None] | None = None,
) -> pd.DataFrame:
    """One row per visible vote with both shown answers' timing, style and origin flag.

    ``columns`` (a subset of ``VOTE_COLUMNS``) reads only those: the exports' vote flags need neither
    the style features nor the labels. The frame is compact, since a million votes make that count: labels
    and prompts are categoricals, and an arm's style (JSON per answer) becomes one float column per name in
    ``style_features`` (``style_column``: nan where the answer has no style, 0 for a feature it lacks).
    ``release`` (e.g. ``feedback.memory.release_free_memory``) is called every ``RELEASE_EVERY`` chunks and
    after each column is joined, so that memory freed on the way is given back before the next step."""
    stmt = _vote_select(visible, columns).order_by(Vote.id)
    parts: dict[str, list[Any]] = {}
    labels = {name: Labels() for name in columns if name in CATEGORICAL}
    for done, rows in enumerate(_chunks(connection.execution_options(stream_results=True).execute(stmt), chunk)):
        if release is not None and done % RELEASE_EVERY == RELEASE_EVERY - 1:
            release()
        values = dict(zip(columns, zip(*rows, strict=True), strict=True))
        for name, column in values.items():
            if name in STYLE_COLUMNS:
                for feature, floats in zip(style_features, style_floats(column, style_features), strict=True):
                    parts.setdefault(style_column(name, feature), []).append(floats)
            elif name in labels:
                parts.setdefault(name, []).append(labels[name].codes(column))
            else:
                parts.setdefault(name, []).append(pd.Series(column, name=name))
    built = {}
    for name in list(parts):  # one column at a time, its chunks let go as it is built
        chunks = parts.pop(name)
        if name in labels:
            built[name] = labels[name].categorical(chunks)
        elif isinstance(chunks[0], np.ndarray):
            built[name] = pd.Series(np.concatenate(chunks))
        else:
            built[name] = pd.concat(chunks, ignore_index=True)
        del chunks
        if release is not None:
            release()
    empty = {name: [] for column in columns for name in _expanded(column, style_features)}
    frame = pd.DataFrame(built or empty, copy=False)  # the columns as built: no second, consolidated copy
    if "handed_off" in frame:
        frame["handed_off"] = frame["handed_off"].fillna(False).astype(bool)
    return frame


def vote_column_chunks(
    connection: Connection, visible: Subquery, columns: Sequence[str], chunk: int = 10_000
) -> Iterator[dict[str, tuple]]:
    """The visible votes' ``columns`` (a subset of ``VOTE_COLUMNS``) in vote order, ``chunk`` rows at a
    time as one tuple of values per column: the caller keeps what it needs of each chunk (compact arrays,
    a subset of the rows) instead of a frame of every column of every vote."""
    stmt = _vote_select(visible, columns).order_by(Vote.id)
    for rows in connection.execution_options(stream_results=True).execute(stmt).partitions(chunk):
        yield dict(zip(columns, zip(*rows, strict=True), strict=True))  # rows transposed, no tuple per row


# how a column of ``VOTE_COLUMNS`` reads as an array in ``vote_column_arrays``: text as objects (None for NULL),
# whole numbers as int64 (never NULL), flags as bool (NULL as False), everything else as float64 (NULL as nan)
_TEXT_COLUMNS = frozenset({*CATEGORICAL, "display", "created_at", "on_style", "off_style"})
_INT_COLUMNS = frozenset({"vote_id", "participant_id"})
_FLAG_COLUMNS = frozenset({"handed_off", "on_reveals", "off_reveals"})


def _kind(name: str) -> str:
    if name in _INT_COLUMNS:
        return "int"
    if name in _FLAG_COLUMNS:
        return "flag"
    return "text" if name in _TEXT_COLUMNS else "float"


def _as_array(name: str, values: Sequence[Any]) -> np.ndarray | pa.Array:
    kind = _kind(name)
    if kind == "int":
        return np.asarray(values, dtype=np.int64)
    if kind == "flag":
        return np.fromiter((bool(v) for v in values), dtype=bool, count=len(values))
    if kind == "float":
        return np.fromiter((np.nan if v is None else v for v in values), dtype=np.float64, count=len(values))
    if name == "created_at":
        return _naive_utc(values)
    return pa.array(values, type=pa.string())


def _naive_utc(values: Sequence[Any] | pa.Array) -> np.ndarray:
    """Times as naive UTC ``datetime64[ns]`` (8 bytes a vote): SQLite's ISO text by Arrow's parser where it
    takes every value (no zone offset), anything else (datetimes, offsets) by pandas, as before."""
    if isinstance(values, pa.Array):
        try:
            return pc.cast(values, pa.timestamp("ns")).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = values.to_numpy(zero_copy_only=False)
    iso = {"format": "ISO8601"} if len(values) and isinstance(values[0], str) else {}  # text on SQLite
    return pd.to_datetime(values, utc=True, **iso).tz_localize(None).to_numpy()


def vote_column_arrays(
    connection: Connection, visible: Subquery, columns: Sequence[str], chunk: int = 10_000, *, scan_votes: bool = False
) -> Iterator[dict[str, np.ndarray]]:
    """``vote_column_chunks`` as one array per column (``_kind``: text as a pyarrow string array with nulls
    for NULL, so labels are encoded and JSON parsed in C (``Labels.codes``, ``style_floats``); flags as bool,
    other numbers as float64 with nan for NULL; ``created_at`` as naive UTC ``datetime64[ns]``). On a SQLite
    file ADBC's driver (``db.arrow``) fills the arrays in C, with the same values; elsewhere the rows come
    through SQLAlchemy and are turned into arrays here. ``scan_votes``: the Arrow read's plan
    (``_vote_select``), for a selection of most of the votes."""
    arrow = sqlite_arrow(connection.engine) if "vote_id" in columns else None  # (ordered by it)
    compiled = None
    if arrow is not None:
        inner = _vote_select(visible, columns, scan_votes=scan_votes).subquery()
        # ADBC's driver infers a column's type from its first batch, and fails on a column NULL all through it
        # that has values later: a first row of typed stand-ins (vote id below any other, dropped on reading)
        # gives every column its type, so the columns come as they are, NULL as Arrow's null
        first, picked = [], []
        for name in columns:
            kind, column = _kind(name), inner.c[name]
            stand_in = (
                _FIRST_VOTE_ID if name == "vote_id" else "0" if kind == "int" else "''" if kind == "text" else "0.0"
            )
            first.append(literal_column(stand_in).label(name))
            picked.append(column if kind in ("int", "text") else cast(column, Float).label(name))
        stmt = union_all(select(*first), select(*picked)).order_by(literal_column("vote_id"))
        compiled = sqlite_sql(stmt, connection.engine)
        if compiled is None:
            arrow.close()
    if compiled is None:
        for values in vote_column_chunks(connection, visible, columns, chunk):
            yield {name: _as_array(name, column) for name, column in values.items()}
        return
    try:
        started = False
        for batch in arrow.batches(*compiled, rows=chunk):
            if not started and batch.num_rows:  # the stand-in row
                if batch.column("vote_id")[0].as_py() != int(_FIRST_VOTE_ID):
                    raise ArrowReadFailed("the votes' read did not start with its stand-in row")
                batch, started = batch.slice(1), True
            if not batch.num_rows:
                continue
            out = {}
            for name in columns:
                kind, column = _kind(name), batch.column(name)
                if kind == "text":  # no Python string made
                    out[name] = _naive_utc(column) if name == "created_at" else column
                elif kind == "int":
                    out[name] = column.to_numpy(zero_copy_only=False).astype(np.int64)
                elif kind == "flag":
                    out[name] = pc.fill_null(column, 0.0).to_numpy(zero_copy_only=False).astype(bool)
                else:
                    out[name] = column.to_numpy(zero_copy_only=False).astype(np.float64)  # null as nan
            yield out
    finally:
        arrow.close()


def participant_vote_frames(
    connection: Connection, visible: Subquery, columns: Sequence[str], chunk: int = 20_000
) -> Iterator[pd.DataFrame]:
    """Plain frames of ``columns`` (no categoricals, no style), a few participants at a time: each frame
    holds every vote of its participants, in vote order within each participant (``columns`` must name
    ``participant_id``). Per-participant statistics (the exports' vote-quality flags) then need one frame
    at a time instead of the whole selection: memory is bounded by ``chunk`` plus one participant's votes."""
    if "participant_id" not in columns:
        raise ValueError("participant_vote_frames needs the participant_id column")
    at = list(columns).index("participant_id")
    stmt = _vote_select(visible, columns).order_by(Vote.participant_id, Vote.id)
    held: list[tuple] = []
    for rows in _chunks(connection.execution_options(stream_results=True).execute(stmt), chunk):
        rows = held + rows
        last = rows[-1][at]
        cut = len(rows)
        while cut and rows[cut - 1][at] == last:  # the last participant may go on in the next chunk
            cut -= 1
        held = rows[cut:]
        if cut:
            yield pd.DataFrame(rows[:cut], columns=list(columns))
    if held:
        yield pd.DataFrame(held, columns=list(columns))


# what a NULL of a column reads as in ``participant_vote_tables`` (beside its ``<name>_null`` flag): a value of the
# column's own type, so that every value of a column has one SQLite type (ADBC's driver needs that, ``db.arrow``)
_NULL_AS = {"time_to_vote_ms": "0.0", "on_tokens": "0", "off_tokens": "0", "on_reveals": "0", "off_reveals": "0"}
_NOT_NULL = {"vote_id", "participant_id", "prompt", "winner", "created_at"}


def participant_vote_tables(
    engine: Engine, visible: Subquery, columns: Sequence[str], chunk: int = 65_536
) -> Iterator[pa.Table] | None:
    """``participant_vote_frames`` as Arrow tables read by ADBC's SQLite driver (``db.arrow``), for the columns
    ``_NULL_AS`` and ``_NOT_NULL`` know: each nullable column ``x`` comes as ``x`` (NULL read as ``_NULL_AS[x]``)
    and ``x_null``. None where that reader can't run (not a SQLite file, the driver missing, a parameter
    SQLAlchemy would convert): read ``participant_vote_frames`` then."""
    if "participant_id" not in columns or not set(columns) <= _NOT_NULL | set(_NULL_AS):
        return None
    arrow = sqlite_arrow(engine)
    if arrow is None:
        return None
    inner = _vote_select(visible, columns).subquery()
    picked = []
    for name in columns:
        if name in _NULL_AS:
            picked += [
                func.coalesce(inner.c[name], literal_column(_NULL_AS[name])).label(name),
                inner.c[name].is_(None).label(f"{name}_null"),
            ]
        else:
            picked.append(inner.c[name])
    compiled = sqlite_sql(select(*picked).order_by(inner.c.participant_id, inner.c.vote_id), engine)
    if compiled is None:
        arrow.close()
        return None
    return _complete_participants(arrow, *compiled, chunk)


def _complete_participants(arrow: SQLiteArrow, sql: str, params: list[Any], chunk: int) -> Iterator[pa.Table]:
    held: list[pa.RecordBatch] = []
    try:
        for batch in arrow.batches(sql, params, rows=chunk):
            if not batch.num_rows:
                continue
            who = batch.column("participant_id")
            last = who[-1]
            cut = batch.num_rows - pc.sum(pc.equal(who, last)).as_py()  # the last participant may go on
            if cut:
                yield pa.Table.from_batches([*held, batch.slice(0, cut)])
                held = []
            held.append(batch.slice(cut))
        if held:
            yield pa.Table.from_batches(held)
    finally:
        arrow.close()


class Labels:
    """One label column read in chunks: a code per vote, each distinct string held once."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def codes(self, values: Sequence[str | None] | pa.Array) -> np.ndarray:
        """A code per value (-1 for None), new values numbered in order of first appearance; the values are
        factorised in C first (a pyarrow array by Arrow's dictionary encoding, which numbers them in the same
        order), so the Python dictionary sees each distinct value of the chunk once."""
        if isinstance(values, pa.Array):
            encoded = pc.dictionary_encode(values)
            local = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
            uniques = encoded.dictionary.to_pylist()
        else:
            local, uniques = pd.factorize(np.asarray(values, dtype=object))
        index = self.index
        known = np.fromiter((index.setdefault(v, len(index)) for v in uniques), dtype=np.int32, count=len(uniques))
        return np.where(local >= 0, known[np.maximum(local, 0)] if len(known) else -1, -1).astype(np.int32)

    def categorical(self, chunks: list[np.ndarray]) -> pd.Categorical:
        """The column as a categorical with sorted categories (grouping orders them as it orders strings)."""
        names = list(self.index)
        order = sorted(range(len(names)), key=names.__getitem__)
        rank = np.empty(len(names), dtype=np.int32)
        rank[order] = np.arange(len(names), dtype=np.int32)
        codes = np.concatenate(chunks)
        codes = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1) if len(names) else codes
        return pd.Categorical.from_codes(codes, categories=pd.Index([names[i] for i in order], dtype="str"))


def _expanded(name: str, style_features: Sequence[str]) -> list[str]:
    return [style_column(name, f) for f in style_features] if name in STYLE_COLUMNS else [name]


def style_floats(raw: Sequence[str | None] | pa.Array, features: Sequence[str]) -> list[np.ndarray]:
    """One float array per feature from the stored style JSON (nan without a style, 0 for a missing feature).

    float32: the features are counts (``feedback.style``), exact in float32 up to 2**24, at half the memory.
    A pyarrow array is parsed by Arrow's JSON reader (``_arrow_style_floats``) where it can, else per value."""
    if isinstance(raw, pa.Array):
        parsed = _arrow_style_floats(raw, features)
        if parsed is not None:
            return parsed
        raw = raw.to_pylist()
    out = [np.full(len(raw), np.nan, dtype=np.float32) for _ in features]
    for row, text in enumerate(raw):
        style = orjson.loads(text) if text is not None else None
        if style is None:
            continue
        if not isinstance(style, dict):
            style = {}
        for array, feature in zip(out, features, strict=True):
            array[row] = float(style.get(feature, 0) or 0)
    return out


def _arrow_style_floats(raw: pa.Array, features: Sequence[str]) -> list[np.ndarray] | None:
    """``style_floats`` of styles that are all one-line JSON objects with numbers (or null) for the features,
    as ``feedback.style`` writes them: the objects joined into one newline-delimited buffer and parsed by
    Arrow's JSON reader (the features read as float64, a missing or null one as 0, as the loop reads them).
    None for anything else (a non-object, a line break, a feature that is not a number): the loop decides."""
    out = [np.full(len(raw), np.nan, dtype=np.float32) for _ in features]
    present = raw.is_valid()
    texts = raw.filter(present)
    if not len(texts):
        return out
    table = json_objects(texts, pa.schema([(feature, pa.float64()) for feature in features]))
    if table is None:
        return None
    at = np.flatnonzero(present.to_numpy(zero_copy_only=False))
    for array, feature in zip(out, features, strict=True):
        values = pc.fill_null(table.column(feature), 0.0).to_numpy()
        array[at] = values + 0.0  # (-0.0 reads as 0, as ``-0.0 or 0`` does)
    return out


def _chunks(result: Any, size: int) -> Iterator[list]:
    for rows in result.partitions(size):
        yield [tuple(row) for row in rows]


def judge_rows(connection: Connection, visible: Subquery) -> pd.DataFrame:
    """Every judge verdict on a visible vote (both orders), with its cost and tokens."""
    stmt = (
        select(
            JudgeVerdict.vote_id,
            JudgeVerdict.model,
            JudgeVerdict.order,
            JudgeVerdict.winner_arm,
            JudgeVerdict.tokens_in,
            JudgeVerdict.tokens_out,
            JudgeVerdict.cost,
        )
        .join(Vote, Vote.id == JudgeVerdict.vote_id)
        .join(visible, visible.c.id == Vote.conversation_id)
        .where(Vote.hidden_at.is_(None))
    )
    return pd.DataFrame(
        connection.execute(stmt).all(),
        columns=["vote_id", "model", "order", "judge_arm", "tokens_in", "tokens_out", "cost"],
    )
