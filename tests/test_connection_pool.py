"""PostgreSQL connections: a crowd keeps the ones it opened, and only an idle one pays a ping."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, event, text

from db import session as db_session
from tests.conftest import POSTGRES_ADMIN_URL, _postgres_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _postgres_database()


def _connects(url: str) -> list[object]:
    opened: list[object] = []
    event.listen(db_session.get_engine(url), "connect", lambda connection, _record: opened.append(connection))
    return opened


def _backend_pid(connection) -> int:  # noqa: ANN001 - a SQLAlchemy Connection
    return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _terminate(pid: int) -> None:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    admin.dispose()


def test_connections_a_crowd_opened_are_kept_for_the_next_crowd(pg_url: str) -> None:
    engine = db_session.get_engine(pg_url)
    opened = _connects(pg_url)
    crowd = db_session.POOL_SIZE
    for _ in range(2):  # with 10 kept and 20 overflow, the second crowd opened 20 of its 30 again
        connections = [engine.connect() for _ in range(crowd)]
        for connection in connections:
            connection.execute(text("SELECT 1"))
        for connection in connections:
            connection.close()
    assert len(opened) == crowd


def test_a_connection_in_use_again_soon_is_not_pinged(pg_url: str) -> None:
    engine = db_session.get_engine(pg_url)
    pings: list[str] = []
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    raw = engine.pool._pool.queue[0].driver_connection  # noqa: SLF001 - the one idle connection
    execute = raw.cursor
    raw.cursor = lambda *args, **kwargs: pings.append("cursor") or execute(*args, **kwargs)
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 2")
    assert pings == ["cursor"]  # the statement's own cursor only, no ping before it


def test_an_idle_connection_that_broke_is_replaced_before_use(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = db_session.get_engine(pg_url)
    with engine.connect() as connection:
        dead = _backend_pid(connection)
    _terminate(dead)  # as a server restart does while the connection waits in the pool
    monkeypatch.setattr(db_session, "PING_AFTER_IDLE_S", 0.0)  # it has been idle long enough to be pinged
    with engine.connect() as connection:
        assert _backend_pid(connection) != dead


def test_a_write_rides_out_a_connection_that_broke_while_in_use(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within the no-ping window a broken connection fails its first statement; ``in_transaction``
    retries on a fresh one."""
    monkeypatch.setattr(db_session, "PING_AFTER_IDLE_S", 3600.0)
    with db_session.session_scope(pg_url) as session:
        dead = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    _terminate(dead)
    pid = db_session.in_transaction(
        pg_url, lambda session: session.execute(text("SELECT pg_backend_pid()")).scalar_one(), backoff_s=0.01
    )
    assert pid != dead
