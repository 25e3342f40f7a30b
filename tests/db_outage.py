"""Make a real test database briefly unreachable, the way an event's database can be."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from db.session import get_engine
from tests.conftest import POSTGRES_ADMIN_URL


@contextmanager
def database_unavailable(url: str) -> Iterator[None]:
    """SQLite: a directory takes the file's place; PostgreSQL: the database refuses connections."""
    get_engine(url).dispose()
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        files = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
        moved = [(f, f.with_name(f.name + ".away")) for f in files if f.exists()]
        for original, away in moved:
            original.rename(away)
        path.mkdir()
        try:
            yield
        finally:
            get_engine(url).dispose()
            path.rmdir()
            for original, away in moved:
                away.rename(original)
        return
    name = url.rsplit("/", 1)[1]
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
    try:
        yield
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
        get_engine(url).dispose()
