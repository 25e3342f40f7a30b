"""One flat row per vote, shared by the CSV and Parquet formats (same columns, same meanings), built a batch at a
time as an Arrow table (``vote_table``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from db.vocabulary import BOTH
from feedback.export.dataset import Batch, FlagColumns, tag_list

# column -> (meaning, pyarrow type name); the data card and the Parquet schema both read this
COLUMNS: dict[str, tuple[str, str]] = {
    "vote_id": ("vote id (stable within the database)", "int64"),
    "conversation_id": ("conversation id", "int64"),
    "turn_index": ("0-based turn the vote was cast after", "int32"),
    "event": ("event code", "string"),
    "region": ("sf, europe or apac", "string"),
    "participant": ("participant id re-hashed with this export's salt", "string"),
    "language": ("detected prompt language (ISO 639-1)", "string"),
    "category": ("prompt category when known", "string"),
    "handoff_side": ("pane (a = left, b = right) that showed the handoff-on arm", "string"),
    "winner": ("verdict in pane terms: a, b, tie, both_bad, identical", "string"),
    "winner_arm": ("verdict in arm terms: on, off, tie, both_bad, identical", "string"),
    "final": ("true once a later prompt made the vote final", "bool"),
    "policy": ("live handoff policy", "string"),
    "threshold": ("live handoff threshold", "float64"),
    "score": ("live policy score (hand off when score >= threshold)", "float64"),
    "handed_off": ("whether the policy handed this turn off", "bool"),
    "prompt": ("the participant's prompt for this turn", "string"),
    "answer_off": ("handoff-off answer (local model)", "string"),
    "answer_on": ("handoff-on answer (cloud when handed off, else local)", "string"),
    "model_off": ("model of the handoff-off answer", "string"),
    "model_on": ("model of the handoff-on answer", "string"),
    "source_on": ("local or cloud", "string"),
    "latency_off_ms": ("total latency of the off answer", "float64"),
    "latency_on_ms": ("total latency of the on answer", "float64"),
    "cost_on": ("cloud cost of the on answer (event currency)", "float64"),
    "energy_off_wh": ("estimated energy of the off answer in Wh (measured time x device power)", "float64"),
    "energy_on_wh": ("estimated energy of the on answer in Wh (EcoLogits when cloud)", "float64"),
    "stars_off": ("1-5 stars for the off answer", "int32"),
    "stars_on": ("1-5 stars for the on answer", "int32"),
    "stars_both": ("1-5 stars when the panes were identical", "int32"),
    "tags_off": ("reason tags for the off answer, ';'-separated", "string"),
    "tags_on": ("reason tags for the on answer, ';'-separated", "string"),
    "tags_both": ("reason tags when identical, ';'-separated", "string"),
    "comment": ("free-text comment", "string"),
    "created_at": ("vote time (UTC)", "timestamp"),
    "time_to_vote_ms": ("answers complete -> vote first saved, in ms", "float64"),
    "display": ("live, or fair (both panes released together)", "string"),
    "too_fast": ("saved sooner than the answers can be read (2 s + 10 ms per token of the shorter)", "bool"),
    "flagged_participant": ("the voter looks automated or careless (see participant_flags)", "bool"),
    "participant_flags": ("why: too_fast, same_side, burst (comma-separated)", "string"),
    "reveals_origin": ("an answer names a model or AI company (the vote was not blind)", "bool"),
    "duplicate": ("the voter already sent this prompt (exactly or nearly)", "bool"),
}


_TYPES = {
    "int64": pa.int64(),
    "int32": pa.int32(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "float64": pa.float64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
SCHEMA = pa.schema([(name, _TYPES[kind]) for name, (_, kind) in COLUMNS.items()])


def _positions(
    keys: pa.Array, wanted: pa.Array | np.ndarray, where: pa.Array | None = None, value: str | None = None
) -> np.ndarray:
    """For each wanted key, the position of its row among ``keys`` (only rows whose ``where`` equals ``value``
    when given; keys are unique there: the schema's unique constraints), -1 where there is none."""
    at = None
    if where is not None:
        rows = pc.fill_null(pc.equal(where, value), False)
        at = np.flatnonzero(rows.to_numpy(zero_copy_only=False))
        keys = keys.filter(rows)
    found = pc.index_in(wanted, value_set=keys).to_numpy(zero_copy_only=False)
    found = np.where(np.isnan(found), -1, found).astype(np.int64) if found.dtype.kind == "f" else found.astype(np.int64)
    return found if at is None or not at.size else np.where(found >= 0, at[np.maximum(found, 0)], -1)


def _take(values: pa.Array, positions: np.ndarray) -> pa.Array:
    """Rows of ``values`` at ``positions``; -1 gives null."""
    return values.take(pa.array(positions, mask=positions < 0))


def vote_table(batch: Batch) -> pa.Table:
    """One row per vote in ``SCHEMA``: the batch's tables joined column-wise (Arrow ``take``), in the order of
    the nested rows (conversation, turn, then vote id), with no Python object per row or per value."""
    c, t, a, d, v, r = batch.conversations, batch.turns, batch.answers, batch.decisions, batch.votes, batch.ratings
    vote_turn = _positions(t["id"], v["turn_id"])
    if (vote_turn < 0).any():
        raise KeyError("a vote's turn is not in its batch")
    order = np.argsort(vote_turn, kind="stable")  # the batch's turns in order; a turn's votes by vote id
    vote_turn = vote_turn[order]
    vote_conversation = _positions(c["id"], t["conversation_id"])[vote_turn]
    vote_ids = v["id"].take(order)
    off = _positions(a["turn_id"], t["id"], a["arm"], "off")[vote_turn]
    on = _positions(a["turn_id"], t["id"], a["arm"], "on")[vote_turn]
    decision = _positions(d["turn_id"], t["id"])[vote_turn]
    rated = {arm: _positions(r["vote_id"], vote_ids, r["arm"], arm) for arm in ("off", "on", BOTH)}

    def turns(name: str, kind: str) -> pa.Array:
        return t[name].cast(_TYPES[kind]).take(vote_turn)

    def conversations(name: str) -> pa.Array:
        return c[name].take(vote_conversation)

    def votes(name: str) -> pa.Array:
        return v[name].take(order)

    def answers(name: str, arm: np.ndarray) -> pa.Array:
        return _take(a[name], arm)

    def decisions(name: str) -> pa.Array:
        return _take(d[name], decision)

    tag_texts: dict[str | None, str] = {}  # few distinct tag sets: each decoded once per batch
    distinct = pc.unique(r["tags"])
    joined = pa.array([tag_texts.setdefault(raw, ";".join(tag_list(raw))) for raw in distinct.to_pylist()], pa.string())
    tags = joined.take(pc.index_in(r["tags"], value_set=distinct))
    stars = r["stars"].cast(pa.int32())
    category = turns("category", "string")
    known = pc.fill_null(pc.not_equal(category, ""), False)  # ``turn.category or conversation.category``
    columns = {
        "vote_id": vote_ids,
        "conversation_id": conversations("id"),
        "turn_index": turns("index", "int32"),
        "event": conversations("event"),
        "region": conversations("region"),
        "participant": conversations("participant"),
        "language": turns("language", "string"),
        "category": pc.if_else(known, category, conversations("category")),
        "handoff_side": conversations("handoff_side"),
        "winner": votes("winner"),
        "winner_arm": votes("winner_arm"),
        "final": votes("final"),
        "policy": decisions("policy"),
        "threshold": decisions("threshold"),
        "score": decisions("score"),
        "handed_off": decisions("handed_off"),
        "prompt": turns("prompt", "string"),
        "answer_off": answers("text", off),
        "answer_on": answers("text", on),
        "model_off": answers("model", off),
        "model_on": answers("model", on),
        "source_on": answers("source", on),
        "latency_off_ms": answers("latency_ms", off),
        "latency_on_ms": answers("latency_ms", on),
        "cost_on": answers("cost", on),
        "energy_off_wh": answers("energy_wh", off),
        "energy_on_wh": answers("energy_wh", on),
        "stars_off": _take(stars, rated["off"]),
        "stars_on": _take(stars, rated["on"]),
        "stars_both": _take(stars, rated[BOTH]),
        "tags_off": _take(tags, rated["off"]),
        "tags_on": _take(tags, rated["on"]),
        "tags_both": _take(tags, rated[BOTH]),
        "comment": votes("comment"),
        "created_at": votes("created_at"),
        "time_to_vote_ms": votes("time_to_vote_ms"),
        "display": votes("display"),
        **_flag_columns(batch.flags, order),
    }
    return pa.Table.from_arrays([columns[name] for name in SCHEMA.names], schema=SCHEMA)


def _flag_columns(flags: FlagColumns | None, order: np.ndarray) -> dict[str, pa.Array]:
    names = ("too_fast", "flagged_participant", "participant_flags", "reveals_origin", "duplicate")
    if flags is None:
        return {name: pa.nulls(len(order), SCHEMA.field(name).type) for name in names}
    missing = ~flags.found[order]
    bits = flags.bits[order]

    def bit(value: int) -> pa.Array:
        return pa.array((bits & value) != 0, mask=missing)

    return {
        "too_fast": bit(1),
        "flagged_participant": bit(2),
        "participant_flags": pa.array(flags.reasons[order], pa.string(), mask=missing),
        "reveals_origin": bit(4),
        "duplicate": bit(8),
    }
