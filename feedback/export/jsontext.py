"""JSON text built a column at a time in Arrow, byte for byte what ``orjson.dumps`` writes for the same values.

The JSON formats (jsonl, arena, dpo) had a Python object per conversation, turn, answer and vote handed to
orjson one record at a time; at a million votes that was most of their time. Here every value of a column
becomes its JSON text in Arrow's C++ kernels, objects are those texts joined element-wise with their keys,
and arrays are a parent's children joined (``grouped``); orjson itself writes only the rare values Arrow
would write differently (strings with characters to escape, floats outside Arrow's plain notation).
Tests compare each encoder with orjson on hostile values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from feedback.export.dataset import Batch, replaced

TEXT = pa.string()
NULL = "null"
_ESCAPED = r'[\\"\x00-\x1f]'  # what orjson escapes in a string: backslash, quote, control characters
_SHORT = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))  # backslash first
_OTHER_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"  # orjson's \b, \f and \u00XX: left to orjson


def literal(text: str) -> pa.Scalar:
    return pa.scalar(text, TEXT)


def join(*parts: pa.Array | pa.Scalar | str) -> pa.Array:
    """Element-wise concatenation of texts and literals (a null anywhere gives null)."""
    return pc.binary_join_element_wise(*(literal(p) if isinstance(p, str) else p for p in parts), literal(""))


def _by_orjson(values: pa.Array, texts: pa.Array, rows: np.ndarray) -> pa.Array:
    """``texts`` with the given rows replaced by orjson's own text of those values."""
    if not rows.size:
        return texts
    written = [orjson.dumps(value) for value in values.take(pa.array(rows)).to_pylist()]
    return replaced(texts, rows, pa.array(written, pa.binary()).cast(TEXT))


def strings(values: pa.Array) -> pa.Array:
    """JSON strings (``null`` for null): quoted in Arrow, the common escapes (backslash, quote, newline, carriage
    return, tab) replaced in Arrow, strings with any other control character written by orjson."""
    values = values.cast(TEXT)
    texts = join('"', values, '"')
    escape = pc.match_substring_regex(values, _ESCAPED).fill_null(False)
    rows = np.flatnonzero(escape.to_numpy(zero_copy_only=False))
    if rows.size:
        escaped = values.take(pa.array(rows))
        for char, written in _SHORT:
            escaped = pc.replace_substring(escaped, char, written)
        texts = replaced(texts, rows, join('"', escaped, '"'))
        odd = pc.match_substring_regex(values.take(pa.array(rows)), _OTHER_CONTROL).to_numpy(zero_copy_only=False)
        texts = _by_orjson(values, texts, rows[odd])
    return texts.fill_null(NULL)


def floats(values: pa.Array) -> pa.Array:
    """JSON numbers as orjson writes floats (shortest round trip, ``.0`` on whole numbers, ``null`` for nan and
    inf): Arrow's text where it is plain notation and |x| >= 1e-4 (or 0), orjson itself for the rest."""
    values = values.cast(pa.float64())
    text = pc.cast(values, TEXT)
    number = values.to_numpy(zero_copy_only=False)  # nulls read as nan
    size = np.abs(number)
    plain = np.isfinite(number) & ((size >= 1e-4) | (number == 0))
    plain &= ~pc.match_substring(text, "e").fill_null(True).to_numpy(zero_copy_only=False)
    whole = ~pc.match_substring(text, ".").fill_null(True).to_numpy(zero_copy_only=False)
    text = pc.if_else(pa.array(whole & plain), join(text, ".0"), text)
    odd = np.flatnonzero(values.is_valid().to_numpy(zero_copy_only=False) & ~plain)
    return _by_orjson(values, text, odd).fill_null(NULL)


def ints(values: pa.Array) -> pa.Array:
    return pc.cast(values, TEXT).fill_null(NULL)


def bools(values: pa.Array) -> pa.Array:
    return pc.if_else(values, literal("true"), literal("false")).fill_null(NULL)


def times(values: pa.Array) -> pa.Array:
    """UTC times as orjson writes them with ``default=str`` (``str(datetime)``: ``YYYY-MM-DD HH:MM:SS[.ffffff]+00:00``)
    as JSON strings."""
    text = pc.cast(values.cast(pa.timestamp("us")), TEXT)
    text = pc.if_else(pc.ends_with(text, ".000000"), pc.utf8_slice_codeunits(text, 0, 19), text)
    return join('"', text, '+00:00"').fill_null(NULL)


def obj(
    fields: Sequence[tuple[str, pa.Array | str | tuple[str, pa.Array, str]]],
    before: str = "",
    after: str = "",
    key: pa.Array | None = None,
) -> pa.Array:
    """One JSON object per row from (key, JSON text of the value) pairs, in that order, between ``before`` and
    ``after`` (a line's newline, say), as ``key:{...}`` with a ``key`` column (a dict entry). A value may come as
    (opening, texts, closing), brackets around a joined list or dict: every literal goes into the one element-wise
    join, so the text is copied once per object instead of once more per bracket."""
    parts: list[pa.Array | str] = [] if key is None else [key]
    pending = (":" if key is not None else "") + before + "{"
    for i, (name, value) in enumerate(fields):
        opening, closing = "", ""
        if isinstance(value, tuple):
            opening, value, closing = value
        pending += ("" if i == 0 else ",") + orjson.dumps(name).decode() + ":" + opening
        parts += [pending, value]
        pending = closing
    return join(*parts, pending + "}" + after)


def grouped(texts: pa.Array, parent: np.ndarray, parents: int, separator: str = ",") -> pa.Array:
    """Per parent (0 .. parents - 1), the texts of its rows joined by ``separator`` in row order ("" for none)."""
    counts = np.bincount(parent, minlength=parents) if len(parent) else np.zeros(parents, np.int64)
    offsets = np.zeros(parents + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    if len(parent) > 1 and (np.diff(parent) < 0).any():  # rows not yet in their parents' order
        texts = texts.take(pa.array(np.argsort(parent, kind="stable")))
    lists = pa.ListArray.from_arrays(pa.array(offsets), texts)
    return pc.binary_join(lists, literal(separator))


def windows(texts: pa.Array, starts: np.ndarray, lengths: np.ndarray, separator: str = ",") -> pa.Array:
    """Per row, ``texts[start : start + length]`` joined by ``separator`` (the windows may overlap)."""
    lengths = lengths.astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    rows = np.repeat(starts.astype(np.int64), lengths) + within
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), texts.take(pa.array(rows)))
    return pc.binary_join(lists, literal(separator))


def lines(texts: pa.Array) -> bytes:
    """The texts (each ending in its newline: ``obj(..., after="\\n")``) as one UTF-8 byte string."""
    if not len(texts):
        return b""
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset : texts.offset + len(texts) + 1]
    return texts.buffers()[2][int(offsets[0]) : int(offsets[-1])].to_pybytes()


def take(texts: pa.Array, rows: np.ndarray) -> pa.Array:
    """``texts`` at ``rows``; -1 gives null."""
    return texts.take(pa.array(rows, mask=rows < 0))


def positions(keys: pa.Array, wanted: pa.Array | np.ndarray) -> np.ndarray:
    """For each wanted key its row among (unique) ``keys``, -1 where there is none."""
    found = pc.index_in(wanted, value_set=keys)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


class Chats:
    """A batch's conversations as each arm saw them, as JSON text: per turn its user message and, where the
    arm answered, the assistant message (``ConversationRow.messages``), for battle records and preference pairs.
    Turns come in conversation order (the batch's turns query), so a conversation's turns are contiguous."""

    def __init__(self, batch: Batch) -> None:
        c, t, a = batch.conversations, batch.turns, batch.answers
        self.conversation = positions(c["id"], t["conversation_id"])
        counts = np.bincount(self.conversation, minlength=len(c["id"])) if len(t["id"]) else np.zeros(0, np.int64)
        first = np.zeros(len(c["id"]) + 1, dtype=np.int64)
        np.cumsum(counts, out=first[1:])
        self.start = first[self.conversation]  # per turn, the row of its conversation's first turn
        self.count = counts[self.conversation]  # per turn, its conversation's number of turns
        user = join('{"role":"user","content":', strings(t["prompt"]), "}")
        self.answer: dict[str, np.ndarray] = {}
        self.fragment: dict[str, pa.Array] = {}
        text = strings(a["text"])
        for arm in ("off", "on"):
            rows = np.flatnonzero(pc.fill_null(pc.equal(a["arm"], arm), False).to_numpy(zero_copy_only=False))
            found = positions(a["turn_id"].take(pa.array(rows)), t["id"])
            self.answer[arm] = np.where(found >= 0, rows[np.maximum(found, 0)], -1) if rows.size else found
            said = join(',{"role":"assistant","content":', take(text, self.answer[arm]), "}").fill_null("")
            self.fragment[arm] = join(user, said)

    def messages(self, arm: str, turns: np.ndarray, through: np.ndarray) -> pa.Array:
        """Per (turn, n): the arm's messages of the first n turns of that turn's conversation, comma-joined
        (``ConversationRow.messages(arm, n - 1)`` without its brackets)."""
        return windows(self.fragment[arm], self.start[turns], np.clip(through, 0, self.count[turns]))
