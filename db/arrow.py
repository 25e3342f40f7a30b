"""Query results read straight into Arrow columns on SQLite, through ADBC's SQLite driver.

The sqlite3 driver makes a Python tuple per row and an object per value, which was most of an export's
reading time; ADBC's driver (``adbc-driver-sqlite``) fills Arrow arrays in C, in a reader process of its own
(``SQLiteArrow`` says why). Only for SQLite database
files: elsewhere (PostgreSQL, in-memory SQLite, the driver not installed) ``sqlite_arrow`` gives None and
callers read through SQLAlchemy as before.

SQLite has no column types, so the driver infers each column's type from the rows it reads before the first
Arrow batch (``adbc.sqlite.query.batch_rows``): a column that is NULL in all of those and text later fails.
``table`` therefore reads a whole (bounded) result as one batch, so the inference sees every row; callers
cast the columns to the types they expect. ``batches`` streams a long result, for selects whose columns are
never NULL (wrap a nullable one as ``COALESCE(x, 0)`` next to ``x IS NULL``).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pyarrow as pa

if TYPE_CHECKING:  # the reader process needs neither: it starts faster without SQLAlchemy
    from sqlalchemy import CompoundSelect, Engine, Select

_BATCH_ROWS = "adbc.sqlite.query.batch_rows"
_WHOLE = 1 << 30  # rows read before the first batch: all of a bounded result


class ArrowReadFailed(RuntimeError):
    """The reader process could not run a query (its error, as text)."""


class SQLiteArrow:
    """Read-only ADBC reads of one SQLite file, done in a reader process of its own; ``close`` when done.

    Why a process: ADBC's driver carries its own copy of SQLite, and POSIX file locks belong to a process, so
    when that copy closes the file it drops every lock this process holds on it, the sqlite3 module's too
    (https://sqlite.org/howtocorrupt.html, 2.2). Another process's connection, closing, then finds itself the
    last one, checkpoints and deletes the WAL under this process's open connections: an export run beside
    the app could lose votes. The reader process holds no other connection to the file, so its closing
    drops only its own locks. Results come back as Arrow IPC streams over a pipe (a copy, no per-value work).
    The process starts at the first query, so asking costs nothing until a read is made.
    """

    def __init__(self, path: str) -> None:
        self._path = str(Path(path).resolve())
        self._process: subprocess.Popen[bytes] | None = None
        self._streaming = False

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "db.arrow", self._path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=str(Path(__file__).resolve().parent.parent),
            )
        return self._process

    def _result(self, sql: str, params: Sequence[Any], batch_rows: int) -> pa.RecordBatchStreamReader:
        if self._streaming:
            raise RuntimeError("one result at a time: read the open batches to the end first")
        process = self._start()
        assert process.stdin is not None and process.stdout is not None
        try:
            pickle.dump((sql, list(params), batch_rows), process.stdin)
            process.stdin.flush()
            status, message = pickle.load(process.stdout)
        except (BrokenPipeError, EOFError):
            raise ArrowReadFailed(f"the Arrow reader of {self._path} ended (exit {process.wait()})") from None
        if status != "ok":
            raise ArrowReadFailed(message)
        return pa.ipc.open_stream(process.stdout)

    def table(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """The whole result (one batch: the type inference sees every row)."""
        return self._result(sql, params, _WHOLE).read_all()

    def batches(self, sql: str, params: Sequence[Any] = (), rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The result streamed ``rows`` at a time (columns must never be NULL: see the module's note)."""
        reader = self._result(sql, params, rows)
        self._streaming = True
        try:
            yield from reader
        finally:
            for _ in reader:  # a reader left early: the rest of its stream still comes down the pipe
                pass
            self._streaming = False

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()  # the reader's cue to close its connection and end
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()

    def __enter__(self) -> SQLiteArrow:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _serve(path: str) -> None:
    """The reader process: one read-only ADBC connection, answering (sql, params, batch rows) requests
    from stdin with a status and an Arrow IPC stream on stdout until stdin closes."""
    import adbc_driver_sqlite.dbapi as adbc

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the stream
    requests = sys.stdin.buffer
    connection = adbc.connect(f"file:{quote(path)}?mode=ro")
    try:
        while True:
            try:
                sql, params, batch_rows = pickle.load(requests)
            except EOFError:
                return
            cursor = connection.cursor()
            try:
                cursor.adbc_statement.set_options(**{_BATCH_ROWS: str(batch_rows)})
                cursor.execute(sql, tuple(params) if params else None)
                reader = cursor.fetch_record_batch()
            except Exception as error:  # noqa: BLE001 - told to the asking process, which raises it
                cursor.close()
                pickle.dump(("error", f"{type(error).__name__}: {error}"), out)
                out.flush()
                continue
            pickle.dump(("ok", None), out)
            with pa.ipc.new_stream(out, reader.schema) as writer:
                for batch in reader:
                    writer.write_batch(batch)
            out.flush()
            cursor.close()
    finally:
        connection.close()


def sqlite_arrow(engine: Engine) -> SQLiteArrow | None:
    """An Arrow reader of the engine's SQLite file, or None (not a SQLite file, or the driver missing)."""
    if engine.dialect.name != "sqlite":
        return None
    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file:") or not Path(path).is_file():
        return None
    if importlib.util.find_spec("adbc_driver_sqlite") is None:
        return None
    return SQLiteArrow(path)


def sqlite_sql(stmt: Select | CompoundSelect, engine: Engine) -> tuple[str, list[Any]] | None:
    """The statement's SQLite text and positional parameters, or None where SQLAlchemy would convert a
    parameter on the way (a date, say): those statements keep going through SQLAlchemy."""
    compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    names = compiled.positiontup or []
    processors = compiled._bind_processors  # noqa: SLF001 (no public way to ask)
    if any(name in processors for name in names):
        return None
    params = compiled.params
    return str(compiled), [params[name] for name in names]


if __name__ == "__main__":
    _serve(sys.argv[1])


def json_objects(texts: pa.Array, schema: pa.Schema | None = None) -> pa.Table | None:
    """One-line JSON objects (one a value, no nulls) parsed by Arrow's JSON reader into a table, a row each: the
    objects joined into one newline-delimited buffer and read in one pass in C. ``schema``: the fields to read and
    their types (others ignored); else inferred. None where a value is not a one-line object or Arrow can't read
    them (a field of mixed types, say): the caller parses those per value."""
    import pyarrow.compute as pc
    import pyarrow.json as pa_json

    try:
        if not pc.all(pc.starts_with(texts, "{")).as_py() or pc.any(pc.match_substring(texts, "\n")).as_py():
            return None
        lines = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(texts)], pa.int32()), texts), "\n")
        buffer = lines[0].as_buffer()
        parse = (
            pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
            if schema is not None
            else pa_json.ParseOptions()
        )
        table = pa_json.read_json(
            pa.BufferReader(buffer),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=buffer.size + 1),
            parse_options=parse,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    return table if table.num_rows == len(texts) else None
