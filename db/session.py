"""Engine and session factory, transactions that ride out a briefly unavailable database, and the
migration check the app runs at start-up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)

T = TypeVar("T")


class DatabaseNotMigrated(RuntimeError):
    """The database is behind the code's schema; the message says which command fixes it."""


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine (and pool) per database URL per process."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # hide_parameters: error messages (logs, pages) never carry the values bound (prompts, hashes)
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True)


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
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s, max=2.0),
        retry=retry_if_exception_type(UNAVAILABLE),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt, session_scope(url) as session:
                result = work(session)
        return result
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
