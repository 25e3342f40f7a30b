"""Query results read straight into Arrow columns on SQLite, through ADBC's SQLite driver.

The sqlite3 driver makes a Python tuple per row and an object per value, which was most of an export's
reading time; ADBC's driver (``adbc-driver-sqlite``) fills Arrow arrays in C. Only for SQLite database
files: elsewhere (PostgreSQL, in-memory SQLite, the driver not installed) ``sqlite_arrow`` gives None and
callers read through SQLAlchemy as before.

SQLite has no column types, so the driver infers each column's type from the rows it reads before the first
Arrow batch (``adbc.sqlite.query.batch_rows``): a column that is NULL in all of those and text later fails.
``table`` therefore reads a whole (bounded) result as one batch, so the inference sees every row; callers
cast the columns to the types they expect. ``batches`` streams a long result, for selects whose columns are
never NULL (wrap a nullable one as ``COALESCE(x, 0)`` next to ``x IS NULL``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
from sqlalchemy import Engine, Select

_BATCH_ROWS = "adbc.sqlite.query.batch_rows"
_WHOLE = 1 << 30  # rows read before the first batch: all of a bounded result


class SQLiteArrow:
    """One read-only ADBC connection to a SQLite file; ``close`` when done."""

    def __init__(self, path: str) -> None:
        import adbc_driver_sqlite.dbapi as adbc

        self._connection = adbc.connect(f"file:{quote(str(Path(path).resolve()))}?mode=ro")  # read-only

    def _cursor(self, batch_rows: int) -> Any:
        cursor = self._connection.cursor()
        cursor.adbc_statement.set_options(**{_BATCH_ROWS: str(batch_rows)})
        return cursor

    def table(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """The whole result (one batch: the type inference sees every row)."""
        cursor = self._cursor(_WHOLE)
        try:
            cursor.execute(sql, tuple(params) if params else None)
            return cursor.fetch_arrow_table()
        finally:
            cursor.close()

    def batches(self, sql: str, params: Sequence[Any] = (), rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The result streamed ``rows`` at a time (columns must never be NULL: see the module's note)."""
        cursor = self._cursor(rows)
        try:
            cursor.execute(sql, tuple(params) if params else None)
            yield from cursor.fetch_record_batch()
        finally:
            cursor.close()

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> SQLiteArrow:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def sqlite_arrow(engine: Engine) -> SQLiteArrow | None:
    """An Arrow reader of the engine's SQLite file, or None (not a SQLite file, or the driver missing)."""
    if engine.dialect.name != "sqlite":
        return None
    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file:") or not Path(path).is_file():
        return None
    try:
        return SQLiteArrow(path)
    except ImportError:
        return None


def sqlite_sql(stmt: Select, engine: Engine) -> tuple[str, list[Any]] | None:
    """The statement's SQLite text and positional parameters, or None where SQLAlchemy would convert a
    parameter on the way (a date, say): those statements keep going through SQLAlchemy."""
    compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    names = compiled.positiontup or []
    processors = compiled._bind_processors  # noqa: SLF001 (no public way to ask)
    if any(name in processors for name in names):
        return None
    params = compiled.params
    return str(compiled), [params[name] for name in names]
