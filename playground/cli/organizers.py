"""``handoff organizer …``: accounts for the organizer pages (admins of all events, organizers of one)."""

from __future__ import annotations

from enum import StrEnum

import typer
from sqlalchemy import select

from db.models import Event, Organizer
from db.queries import event_by_code
from db.session import ensure_migrated, session_scope
from playground.auth import OrganizerInvalid, add_organizer, unlock
from playground.settings import get_settings

app = typer.Typer(help="Organizer accounts.", no_args_is_help=True)


class Role(StrEnum):
    admin = "admin"
    organizer = "organizer"


@app.command("add")
def add(
    username: str = typer.Option(..., help="Name to sign in with."),
    role: Role = typer.Option(..., help="admin (every event) or organizer (one event)."),
    event: str | None = typer.Option(None, help="Event code, for --role organizer."),
    password: str = typer.Option(
        ...,
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        envvar="HANDOFF_NEW_ORGANIZER_PASSWORD",
        help="Asked for without echo (or read from HANDOFF_NEW_ORGANIZER_PASSWORD); only its hash is stored.",
    ),
) -> None:
    """Create an organizer account."""
    url = get_settings().resolved_database_url
    ensure_migrated(url)
    try:
        with session_scope(url) as session:
            target = event_by_code(session, event) if event else None
            add_organizer(session, username, password, role.value, target)
    except OrganizerInvalid as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    scope = f"event {target.code}" if target else "every event"
    typer.echo(f"Created {role.value} {username.strip()} for {scope}.")


@app.command("list")
def list_() -> None:
    """List organizer accounts (never their passwords)."""
    url = get_settings().resolved_database_url
    ensure_migrated(url)
    with session_scope(url) as session:
        rows = session.execute(
            select(Organizer.username, Organizer.role, Event.code, Organizer.locked_until, Organizer.last_login_at)
            .outerjoin(Event, Event.id == Organizer.event_id)
            .order_by(Organizer.username)
        )
        for username, role, code, locked_until, last_login in rows:
            state = f"locked until {locked_until:%Y-%m-%d %H:%M} UTC" if locked_until else "active"
            typer.echo(f"{username}\t{role}\t{code or '*'}\t{state}\tlast sign-in {last_login or 'never'}")


@app.command("unlock")
def unlock_(username: str = typer.Option(..., help="Account to unlock.")) -> None:
    """Clear a lock-out after repeated failed sign-ins."""
    url = get_settings().resolved_database_url
    ensure_migrated(url)
    with session_scope(url) as session:
        if not unlock(session, username):
            typer.echo(f"No organizer named {username!r}; see `handoff organizer list`.", err=True)
            raise typer.Exit(1)
    typer.echo(f"Unlocked {username}.")
