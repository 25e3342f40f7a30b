"""``handoff db …``: schema migrations."""

from __future__ import annotations

import typer

from db import session as db_session
from playground.settings import get_settings

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the configured database to the latest schema (or REVISION)."""
    url = get_settings().resolved_database_url
    db_session.upgrade(url, revision)
    typer.echo(f"Database at revision {db_session.current_revision(url)}.")


@app.command("current")
def current() -> None:
    """Print the database's schema revision and the code's."""
    url = get_settings().resolved_database_url
    typer.echo(f"database: {db_session.current_revision(url)}  code: {db_session.head_revision()}")
