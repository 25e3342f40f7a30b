"""Engine and session factory, transactions that ride out a briefly unavailable database, and the
migration check the app runs at start-up."""

from __future__ import annotations

import collections
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)

T = TypeVar("T")


class DatabaseNotMigrated(RuntimeError):
    """The database is behind the code's schema; the message says which command fixes it."""


SQLITE_BUSY_TIMEOUT_S = 10.0


class WritersQueue:
    """First come, first served: the lock goes straight to the longest waiter (a plain ``threading.Lock``
    lets the thread that just released it, or any other that is running, take it first, so a waiter can
    be passed over again and again)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiters: collections.deque[threading.Lock] = collections.deque()
        self._held = False

    def acquire(self, timeout: float) -> bool:
        with self._guard:
            if not self._held:
                self._held = True
                return True
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(timeout=timeout):
            return True  # handed over by release
        with self._guard:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return False
        return True  # handed over just as the wait timed out: ours now

    def release(self) -> None:
        with self._guard:
            if self._waiters:
                self._waiters.popleft().release()  # stays held, by the next in line
            else:
                self._held = False


class SQLiteConnection(sqlite3.Connection):
    """A pysqlite connection that can begin as a writer (``BEGIN IMMEDIATE``) behind its process's queue.

    SQLite lets one writer in at a time and makes the others poll (its busy handler sleeps 1, 2, 5 …
    up to 100 ms between tries): with 50 sessions of one process voting at once, the unlucky ones
    slept far past the lock's release. Writers of one process that begin here wait instead on one
    ``WritersQueue`` per database, taken before ``BEGIN IMMEDIATE`` and given back after COMMIT or
    ROLLBACK, so the next one starts as soon as the last one ends; other processes still meet SQLite's
    own lock and busy timeout."""

    writers: WritersQueue | None = None  # the database's queue, set when the engine connects
    _queued: bool = False

    def begin_immediate(self) -> None:
        if self.writers is not None:
            if not self.writers.acquire(timeout=SQLITE_BUSY_TIMEOUT_S):
                raise sqlite3.OperationalError("database is locked (this process's other writers)")
            self._queued = True
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._leave_queue()
            raise

    def _leave_queue(self) -> None:
        if self._queued:
            self._queued = False
            self.writers.release()

    def commit(self) -> None:
        super().commit()  # a failed COMMIT keeps the transaction (and the queue) until the rollback
        self._leave_queue()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._leave_queue()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._leave_queue()


_SQLITE_WRITERS: dict[str, WritersQueue] = {}


def _sqlite_pragmas(dbapi_connection, _record, writers: WritersQueue | None = None) -> None:  # noqa: ANN001
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.close()
    if isinstance(dbapi_connection, SQLiteConnection):
        dbapi_connection.writers = writers


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine (and pool) per database URL per process."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        file = path not in ("", ":memory:")
        if file:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # one writers' queue per database file, shared by every engine of this process that opens it
        writers = _SQLITE_WRITERS.setdefault(str(Path(path).resolve()), WritersQueue()) if file else None
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False, "factory": SQLiteConnection},
            hide_parameters=True,
        )
        event.listen(engine, "connect", lambda connection, record: _sqlite_pragmas(connection, record, writers))
        return engine
    # hide_parameters: error messages (logs, pages) never carry the values bound (prompts, hashes).
    # The pool keeps every connection it opens, up to the same 30 as before: with 10 kept and 20 overflow,
    # a crowd's connections past the tenth were closed at check-in and opened again by the next vote (78
    # new server processes per 1,000 paced votes, each a fork and a log-in on the vote's critical path).
    engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=0, hide_parameters=True)
    event.listen(engine, "checkin", _checked_in)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


POOL_SIZE = 30
PING_AFTER_IDLE_S = 2.0


def _checked_in(_dbapi_connection, record) -> None:  # noqa: ANN001 - pool event arguments
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection, record, _proxy) -> None:  # noqa: ANN001 - pool event arguments
    """``pool_pre_ping`` for connections that sat idle: a connection back in use within
    ``PING_AFTER_IDLE_S`` skips the ping's round trip (one of a vote's ~10); one that broke in that
    window (a server restart) fails its statement, SQLAlchemy drops the pool's older connections as
    disconnected, and ``in_transaction`` retries on fresh ones."""
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        dbapi_connection.rollback()
    except Exception as error:  # noqa: BLE001 - any failure means: use a new connection
        raise DisconnectionError("idle connection failed its ping") from error


def connection_of(db: Session | Connection) -> Connection:
    """The Connection ``db`` runs statements on: a Session's (its transaction's), or ``db`` itself."""
    return db.connection() if isinstance(db, Session) else db


def begin_write(db: Session | Connection) -> None:
    """Make the transaction a writer from now on (call before its reads that must be current).

    SQLite: ``BEGIN IMMEDIATE`` behind the process's other writers (``SQLiteConnection``), unless a write
    already began the transaction (pysqlite begins at the first write, which then holds the write lock).
    The reads that follow see the latest commit and nothing else writes until COMMIT. PostgreSQL: nothing
    (lock the rows themselves, ``SELECT … FOR UPDATE``)."""
    connection = connection_of(db)
    if connection.dialect.name != "sqlite":
        return
    dbapi_connection = connection.connection.dbapi_connection
    if isinstance(dbapi_connection, SQLiteConnection) and not dbapi_connection.in_transaction:
        try:
            dbapi_connection.begin_immediate()
        except sqlite3.OperationalError as error:  # as SQLAlchemy raises it: in_transaction retries it
            raise OperationalError("BEGIN IMMEDIATE", (), error) from error


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: commit on success, roll back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached after retries; nothing was written, the caller keeps the data.

    ``key`` names the message a page shows (in the attendee's language).
    """

    key = "errors.database_unavailable"
    params: dict[str, object] = {}

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"The database is unavailable ({type(cause).__name__}).")


def in_transaction(url: str, work: Callable[[Session], T], *, attempts: int = 3, backoff_s: float = 0.2) -> T:
    """Run ``work`` in its own transaction, retrying while the database is unreachable.

    ``work`` must be safe to repeat (idempotent), since a commit may succeed even when its
    acknowledgement is lost; raises ``DatabaseUnavailable`` once every attempt failed.
    """

    def attempt() -> T:
        with session_scope(url) as session:
            return work(session)

    return _retried(attempt, attempts, backoff_s)


def in_core_transaction(url: str, work: Callable[[Connection], T], *, attempts: int = 3, backoff_s: float = 0.2) -> T:
    """``in_transaction`` on a bare Connection, for a hot path of Core statements (the vote): a Session's
    set-up, events and commit cost more client CPU than such a path's statements themselves."""

    def attempt() -> T:
        with get_engine(url).begin() as connection:
            return work(connection)

    return _retried(attempt, attempts, backoff_s)


def _retried(attempt: Callable[[], T], attempts: int, backoff_s: float) -> T:
    """``attempt`` until it gets through, backing off while the database is unavailable."""
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s, max=2.0),
        retry=retry_if_exception_type(UNAVAILABLE),
        reraise=True,
    )
    try:
        return retrying(attempt)
    except UNAVAILABLE as error:
        raise DatabaseUnavailable(error) from error


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str) -> str | None:
    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def ensure_migrated(url: str) -> None:
    """Refuse to run against a database that is not at the code's schema revision."""
    current, head = current_revision(url), head_revision()
    if current != head:
        state = "empty" if current is None else f"at revision {current}"
        raise DatabaseNotMigrated(
            f"The database is {state}, but this version of the app needs revision {head}. "
            "Run `handoff db upgrade` to migrate it."
        )
