"""Parquet: one row per vote with typed columns (``flat.vote_table``), written in row groups (bounded memory)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from feedback.export.dataset import Batch, Tally
from feedback.export.flat import COLUMNS, SCHEMA, vote_table

SUFFIX = ".parquet"
FLAGS = True  # votes carry their quality flags (feedback.research)
UNIT = "vote"
FIELDS = {name: meaning for name, (meaning, _) in COLUMNS.items()}
NOTES = ["Loads with `pandas.read_parquet` and `datasets.load_dataset('parquet', data_files=...)`."]
ROW_GROUP = 10_000


def write(batches: Iterable[Batch], out: Path, tally: Tally) -> int:
    rows = 0
    with pq.ParquetWriter(out, SCHEMA, compression="zstd") as writer:
        pending: list[pa.Table] = []
        held = 0
        for batch in batches:
            pending.append(vote_table(batch))
            held += pending[-1].num_rows
            while held >= ROW_GROUP:
                table = pa.concat_tables(pending)
                writer.write_table(table.slice(0, ROW_GROUP).combine_chunks())
                pending, held, rows = [table.slice(ROW_GROUP)], held - ROW_GROUP, rows + ROW_GROUP
        if held or rows == 0:
            writer.write_table(pa.concat_tables(pending).combine_chunks() if pending else SCHEMA.empty_table())
            rows += held
    return rows
