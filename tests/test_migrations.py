from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from db import session as db_session
from db.models import Base


def test_upgrade_creates_every_table_on_an_empty_database(empty_db_url: str) -> None:
    assert db_session.current_revision(empty_db_url) is None
    db_session.upgrade(empty_db_url)
    assert db_session.current_revision(empty_db_url) == db_session.head_revision()
    tables = set(inspect(db_session.get_engine(empty_db_url)).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_models_match_the_migrations(db_url: str) -> None:
    with db_session.get_engine(db_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_unmigrated_database_is_refused_with_the_fixing_command(empty_db_url: str) -> None:
    import pytest

    with pytest.raises(db_session.DatabaseNotMigrated, match="handoff db upgrade"):
        db_session.ensure_migrated(empty_db_url)
