"""Copy one database's research rows into another, idempotently: regions kept apart, merged for research.

Rows are matched by their stable ``uid`` (``db.models.StableId``), never by integer id, so a re-run
adds nothing and an interrupted run is completed by running it again (every chunk commits on its
own). A source row whose uid is already in the target with different content, or whose natural key
(event code, pseudonym, vote idempotency key, a turn's index in its conversation…) is already taken
by another row, is a *conflict*: reported, left as it is in the target, never overwritten.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Numeric, Table, UniqueConstraint, insert, select, tuple_
from sqlalchemy.engine import Row

from db import rollups
from db.models import Answer, Conversation, Event, HandoffDecision, Participant, Rating, Turn, Vote
from db.session import ensure_migrated, get_engine

# Parents before children: a child's foreign keys are mapped through the ids its parents got.
MERGED: tuple[Table, ...] = tuple(
    model.__table__ for model in (Event, Participant, Conversation, Turn, HandoffDecision, Answer, Vote, Rating)
)
CHUNK = 500


@dataclass(frozen=True)
class Conflict:
    """One source row that was not copied, and why (the target keeps its own row)."""

    table: str
    uid: str
    reason: str

    def __str__(self) -> str:
        return f"{self.table} {self.uid}: {self.reason}"


@dataclass
class TableCount:
    copied: int = 0
    present: int = 0  # already in the target with the same content (an earlier run)
    conflicts: int = 0
    skipped: int = 0  # a parent row was not copied (a conflict), so neither is this one


@dataclass
class MergeReport:
    counts: dict[str, TableCount] = field(default_factory=lambda: {t.name: TableCount() for t in MERGED})
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def copied(self) -> int:
        return sum(count.copied for count in self.counts.values())

    def conflict(self, table: Table, uid: str, reason: str) -> None:
        self.counts[table.name].conflicts += 1
        self.conflicts.append(Conflict(table.name, uid, reason))


Progress = Callable[[str, int], None]


def merge(source_url: str, target_url: str, *, chunk: int = CHUNK, progress: Progress | None = None) -> MergeReport:
    """Copy every merged table from ``source_url`` into ``target_url``; both must be at the code's schema.

    ``progress(table, rows_done)`` is called after each committed chunk.
    """
    if _same_database(source_url, target_url):
        raise ValueError("--from and --into name the same database: nothing to merge.")
    ensure_migrated(source_url)
    ensure_migrated(target_url)
    report = MergeReport()
    ids: dict[str, dict[int, int]] = {}  # table -> source id -> target id
    with get_engine(source_url).connect() as source, get_engine(target_url).connect() as target:
        for table in MERGED:
            ids[table.name] = {}
            done = 0
            for rows in _chunks(source, table, chunk):
                _merge_chunk(target, table, rows, ids, report)
                target.commit()
                done += len(rows)
                if progress is not None:
                    progress(table.name, done)
        # Rows were copied in bulk, past the per-row rollup hooks: recompute the merged events' rollups
        # (every event the source has, so an interrupted merge is put right by running it again).
        rollups.rebuild(target, ids[Event.__tablename__].values())
        target.commit()
    return report


def _same_database(a: str, b: str) -> bool:
    return get_engine(a).url.render_as_string(hide_password=False) == get_engine(b).url.render_as_string(
        hide_password=False
    )


def _chunks(source: Connection, table: Table, size: int) -> Iterator[list[Row]]:
    """The source table in id order, ``size`` rows at a time (keyset paging: memory stays flat)."""
    last = None
    while True:
        query = select(table).order_by(table.c.id).limit(size)
        if last is not None:
            query = query.where(table.c.id > last)
        rows = list(source.execute(query))
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _merge_chunk(
    target: Connection, table: Table, rows: list[Row], ids: dict[str, dict[int, int]], report: MergeReport
) -> None:
    count = report.counts[table.name]
    existing = {row.uid: row for row in target.execute(select(table).where(table.c.uid.in_([r.uid for r in rows])))}
    fresh: list[tuple[Row, dict[str, Any]]] = []
    for row in rows:
        values = _mapped_values(table, row, ids)
        if values is None:
            count.skipped += 1
            continue
        if (present := existing.get(row.uid)) is not None:
            ids[table.name][row.id] = present.id  # the same row either way: children still map to it
            differing = [
                name for name, value in values.items() if _normal(table, name, getattr(present, name)) != value
            ]
            if differing:
                report.conflict(table, row.uid, "already in the target with other values in " + ", ".join(differing))
            else:
                count.present += 1
            continue
        fresh.append((row, values))
    fresh = _without_taken_keys(target, table, fresh, report)
    if not fresh:
        return
    target.execute(insert(table), [values for _, values in fresh])
    copied = {
        uid: target_id
        for target_id, uid in target.execute(
            select(table.c.id, table.c.uid).where(table.c.uid.in_([row.uid for row, _ in fresh]))
        )
    }
    for row, _ in fresh:
        ids[table.name][row.id] = copied[row.uid]
    count.copied += len(fresh)


def _mapped_values(table: Table, row: Row, ids: dict[str, dict[int, int]]) -> dict[str, Any] | None:
    """The row's columns for the target (foreign keys through the parents' new ids); None without a parent."""
    values: dict[str, Any] = {}
    for column in table.columns:
        if column.name == "id":
            continue
        value = getattr(row, column.name)
        foreign = next(iter(column.foreign_keys), None)
        if foreign is not None and value is not None:
            value = ids[foreign.column.table.name].get(value)
            if value is None:
                return None
        values[column.name] = _normal(table, column.name, value)
    return values


def _normal(table: Table, name: str, value: Any) -> Any:  # noqa: ANN401 - any column value
    """One spelling per value across SQLite and PostgreSQL (naive UTC vs aware datetimes, decimal scale)."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, Decimal | float) and isinstance(table.c[name].type, Numeric):
        scale = table.c[name].type.scale
        if scale is not None:
            return Decimal(value).quantize(Decimal(1).scaleb(-scale))
    return value


def _natural_keys(table: Table) -> list[tuple[str, ...]]:
    """The table's unique constraints other than the primary key and the uid."""
    return [
        tuple(column.name for column in constraint.columns)
        for constraint in table.constraints
        if isinstance(constraint, UniqueConstraint) and [c.name for c in constraint.columns] != ["uid"]
    ]


def _without_taken_keys(
    target: Connection, table: Table, fresh: list[tuple[Row, dict[str, Any]]], report: MergeReport
) -> list[tuple[Row, dict[str, Any]]]:
    """Drop (and report) new rows whose natural key another target row already holds."""
    for key in _natural_keys(table):
        if not fresh:
            break
        columns = [table.c[name] for name in key]
        wanted = [tuple(values[name] for name in key) for _, values in fresh]
        taken = {
            tuple(row)
            for row in target.execute(
                select(*columns).where(
                    tuple_(*columns).in_(wanted) if len(columns) > 1 else columns[0].in_([w[0] for w in wanted])
                )
            )
        }
        if not taken:
            continue
        kept = []
        for (row, values), value in zip(fresh, wanted, strict=True):
            if value in taken:
                shown = ", ".join(f"{name}={values[name]!r}" for name in key)
                report.conflict(table, row.uid, f"another row in the target already has {shown}")
            else:
                kept.append((row, values))
        fresh = kept
    return fresh
