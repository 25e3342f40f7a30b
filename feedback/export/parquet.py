"""Parquet: one row per vote with typed columns, written in batches (bounded memory)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from feedback.export.dataset import ConversationRow, Tally
from feedback.export.flat import COLUMNS, vote_rows

SUFFIX = ".parquet"
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


def write(batches: Iterable[list[ConversationRow]], out: Path, tally: Tally) -> int:
    rows = 0
    with pq.ParquetWriter(out, SCHEMA, compression="zstd") as writer:
        chunk: list[dict] = []
        for row in vote_rows(batches):
            chunk.append(row)
            if len(chunk) == ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(chunk, schema=SCHEMA))
                rows, chunk = rows + len(chunk), []
        if chunk or rows == 0:
            writer.write_table(pa.Table.from_pylist(chunk, schema=SCHEMA))
            rows += len(chunk)
    return rows
