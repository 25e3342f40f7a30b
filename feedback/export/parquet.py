"""Parquet: one row per vote with typed columns, written in batches (bounded memory)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from feedback.export.dataset import ConversationRow, Tally
from feedback.export.flat import COLUMNS, vote_tuples

SUFFIX = ".parquet"
FLAGS = True  # votes carry their quality flags (feedback.research)
UNIT = "vote"
FIELDS = {name: meaning for name, (meaning, _) in COLUMNS.items()}
NOTES = ["Loads with `pandas.read_parquet` and `datasets.load_dataset('parquet', data_files=...)`."]
ROW_GROUP = 10_000

_TYPES = {
    "int64": pa.int64(),
    "int32": pa.int32(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "float64": pa.float64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
SCHEMA = pa.schema([(name, _TYPES[kind]) for name, (_, kind) in COLUMNS.items()])


def _table(chunk: list[tuple]) -> pa.Table:
    """Column-wise: one typed array per column from the transposed tuples (no per-row dicts)."""
    columns = list(zip(*chunk, strict=False)) if chunk else [() for _ in SCHEMA]
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, SCHEMA, strict=False)], schema=SCHEMA
    )


def write(batches: Iterable[list[ConversationRow]], out: Path, tally: Tally) -> int:
    rows = 0
    with pq.ParquetWriter(out, SCHEMA, compression="zstd") as writer:
        chunk: list[tuple] = []
        for batch in batches:
            chunk += vote_tuples(batch)
            while len(chunk) >= ROW_GROUP:
                writer.write_table(_table(chunk[:ROW_GROUP]))
                rows, chunk = rows + ROW_GROUP, chunk[ROW_GROUP:]
        if chunk or rows == 0:
            writer.write_table(_table(chunk))
            rows += len(chunk)
    return rows
