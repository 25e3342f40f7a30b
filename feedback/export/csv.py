"""CSV: one row per vote, spreadsheet-safe (formula-looking cells are made inert).

The bytes are exactly what ``csv.writer`` (QUOTE_MINIMAL, ``\\r\\n``) writes for these rows as Python values,
but the typed table of a few batches (``flat.vote_table``) is encoded a column at a time in Arrow's C++
kernels: CPython's writer managed ~6 MB/s, and a million votes make ~780 MB. Tests check it against
``csv.writer`` on hostile text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedback.export.dataset import Batch, Tally
from feedback.export.flat import COLUMNS, vote_table

SUFFIX = ".csv"
FLAGS = True  # votes carry their quality flags (feedback.research)
UNIT = "vote"
PARTS = True  # the file is a header, then each vote's row in order: written in parts (feedback.export.parts)
FIELDS = {name: meaning for name, (meaning, _) in COLUMNS.items()}
NOTES = [
    "Cells that start with `=`, `+`, `-`, `@`, a tab or a carriage return are prefixed with `'` so "
    "spreadsheets show them as text instead of running them as formulas.",
]
_RISKY_RE2 = r"^[=+\-@\t\r]"  # cells starting with = + - @ tab or CR (RE2: ^ is the start of the text)
_QUOTE_RE2 = '[,"\r\n]'  # QUOTE_MINIMAL: the delimiter, the quote character or a line-terminator character
_TEXT = pa.large_string()
ENCODE_ROWS = 10_000  # rows encoded together: Arrow's per-call overhead is paid per column per chunk


def _scalar(text: str) -> pa.Scalar:
    return pa.scalar(text, _TEXT)


def _quoted(cells: pa.Array) -> pa.Array:
    """QUOTE_MINIMAL on text cells: wrap in quotes (doubling inner ones) where csv.writer would."""
    needs = pc.match_substring_regex(cells, _QUOTE_RE2)
    if not pc.any(needs).as_py():
        return cells
    wrapped = pc.binary_join_element_wise(
        _scalar('"'), pc.replace_substring(cells, '"', '""'), _scalar('"'), _scalar("")
    )
    return pc.if_else(needs, wrapped, cells)


def _floats(array: pa.Array) -> pa.Array:
    """Python's repr of each float: Arrow's shortest round-trip digits where it writes them the same way
    (plain notation, 1e-4 <= |x| < 1e16, plus ``.0`` on whole numbers), repr itself for the rest."""
    text = pc.cast(array, _TEXT)
    number = array.to_numpy(zero_copy_only=False)  # nulls read as nan
    size = np.abs(number)
    plain = ((size >= 1e-4) & (size < 1e16)) | (number == 0)
    plain &= ~pc.match_substring(text, "e").to_numpy(zero_copy_only=False).astype(bool)
    whole = ~pc.match_substring(text, ".").to_numpy(zero_copy_only=False).astype(bool)
    text = pc.if_else(pa.array(whole), pc.binary_join_element_wise(text, _scalar(".0"), _scalar("")), text)
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    odd = np.flatnonzero(valid & ~plain)
    if odd.size:  # tiny, huge, inf, nan: repr one by one (rare)
        cells = text.to_numpy(zero_copy_only=False)
        for i in odd.tolist():
            cells[i] = repr(array[i].as_py())
        text = pa.array(cells, _TEXT)
    return text


def _timestamps(array: pa.Array) -> pa.Array:
    """``datetime.isoformat()`` of UTC times (``+00:00``), the empty cell for null. Arrow writes the naive time
    as ``YYYY-MM-DD HH:MM:SS.ffffff`` (year padded to four digits, as isoformat does); isoformat has a ``T``
    and leaves out zero microseconds."""
    text = pc.cast(array.cast(pa.timestamp("us")), _TEXT)
    text = pc.if_else(pc.ends_with(text, ".000000"), pc.utf8_slice_codeunits(text, 0, 19), text)
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, _scalar("+00:00"), _scalar("")).fill_null("")


def _cells(array: pa.Array) -> pa.Array:
    """One typed column's cells as csv.writer writes the Python values (no nulls: None is the empty cell)."""
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = array.cast(_TEXT)
        risky = pc.match_substring_regex(text, _RISKY_RE2)
        if pc.any(risky).as_py():
            text = pc.if_else(risky, pc.binary_join_element_wise(_scalar("'"), text, _scalar("")), text)
        return _quoted(text).fill_null("")
    if pa.types.is_boolean(kind):
        return pc.if_else(array, _scalar("True"), _scalar("False")).fill_null("")
    if pa.types.is_integer(kind):
        return pc.cast(array, _TEXT).fill_null("")
    if pa.types.is_floating(kind):
        return _floats(array.cast(pa.float64())).fill_null("")
    if pa.types.is_timestamp(kind) and kind.tz == "UTC":
        return _timestamps(array)
    raise TypeError(f"no CSV cells for {kind}")


def encode_table(table: pa.Table) -> bytes:
    """The UTF-8 bytes ``csv.writer`` writes for the table's rows as Python values (after the OWASP prefix),
    column-wise."""
    if not table.num_rows:
        return b""
    cells = [_cells(column.combine_chunks()) for column in table.columns]
    lines = pc.binary_join_element_wise(*cells, _scalar(","))
    lines = pc.binary_join_element_wise(lines, _scalar(""), _scalar("\r\n"))  # each line ends in \r\n
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    return lines.buffers()[2][start:end].to_pybytes()


def header() -> bytes:
    text = io.StringIO()
    csv.writer(text).writerow(list(COLUMNS))
    return text.getvalue().encode("utf-8")


def write_body(batches: Iterable[Batch], handle: BinaryIO) -> int:
    """Each batch's rows in turn, encoded ``ENCODE_ROWS`` at a time (``PARTS``: a slice of the selection written
    alone is its part of the file)."""
    rows = 0
    pending: list[pa.Table] = []
    held = 0
    for batch in batches:
        pending.append(vote_table(batch))
        held += pending[-1].num_rows
        if held >= ENCODE_ROWS:
            handle.write(encode_table(pa.concat_tables(pending)))
            rows, pending, held = rows + held, [], 0
    if pending:
        handle.write(encode_table(pa.concat_tables(pending)))
    return rows + held


def write(batches: Iterable[Batch], out: Path, tally: Tally) -> int:
    with out.open("wb") as handle:
        handle.write(header())
        return write_body(batches, handle)
