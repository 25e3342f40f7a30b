"""CSV: one row per vote, spreadsheet-safe (formula-looking cells are made inert)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from feedback.export.dataset import ConversationRow, Tally
from feedback.export.flat import COLUMNS, vote_tuples

SUFFIX = ".csv"
FLAGS = True  # votes carry their quality flags (feedback.research)
UNIT = "vote"
FIELDS = {name: meaning for name, (meaning, _) in COLUMNS.items()}
NOTES = [
    "Cells that start with `=`, `+`, `-`, `@`, a tab or a carriage return are prefixed with `'` so "
    "spreadsheets show them as text instead of running them as formulas.",
]
_RISKY = ("=", "+", "-", "@", "\t", "\r")


def write(batches: Iterable[list[ConversationRow]], out: Path, tally: Tally) -> int:
    rows = 0
    created_at = list(COLUMNS).index("created_at")
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(COLUMNS))
        for batch in batches:
            records = vote_tuples(batch)
            writer.writerows(
                [
                    (("'" + value) if value.startswith(_RISKY) else value)
                    if value.__class__ is str  # inert text (OWASP CSV injection)
                    else value.isoformat()
                    if i == created_at
                    else value
                    for i, value in enumerate(record)
                ]
                for record in records
            )
            rows += len(records)
    return rows
