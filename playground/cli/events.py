"""``handoff event …``: create and list events."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import typer
from sqlalchemy import select

from db.events import OPERATOR, EventInvalid, EventSpec, create_event
from db.models import Event, Region
from db.queries import list_events, normalize_code
from db.session import ensure_migrated, session_scope
from playground.handoff.policies import POLICY_NAMES
from playground.settings import get_settings

app = typer.Typer(help="Events.", no_args_is_help=True)


@app.command("create")
def create(
    code: str = typer.Option(..., help="Short code attendees type, e.g. SF-2026."),
    name: str = typer.Option(..., help="Display name."),
    region: Region = typer.Option(..., help="sf, europe or apac."),
    city: str = typer.Option(...),
    timezone: str = typer.Option("UTC", help="IANA time zone, e.g. America/Los_Angeles."),
    starts_on: dt.datetime | None = typer.Option(None, formats=["%Y-%m-%d"]),
    ends_on: dt.datetime | None = typer.Option(None, formats=["%Y-%m-%d"]),
    budget: float | None = typer.Option(None, help="Cloud budget for handoff, in --currency."),
    currency: str = typer.Option("USD"),
    policy: str | None = typer.Option(None, help="Handoff policy (default: settings)."),
    threshold: float | None = typer.Option(None, help="Handoff threshold (default: settings)."),
    language: str = typer.Option("en", help="Interface language: en, ja or fr."),
    latency_fair: bool = typer.Option(
        False, "--latency-fair", help="Release both panes' text together, so timing does not reveal the handoff side."
    ),
    if_missing: bool = typer.Option(False, "--if-missing", help="Do nothing if the code exists."),
) -> None:
    """Create an event attendees can join by its code."""
    url = get_settings().resolved_database_url
    ensure_migrated(url)
    spec = EventSpec(
        code=code,
        name=name,
        region=region.value,
        city=city,
        timezone=timezone,
        starts_on=starts_on.date() if starts_on else None,
        ends_on=ends_on.date() if ends_on else None,
        cloud_budget=Decimal(str(budget)) if budget is not None else None,
        currency=currency,
        handoff_policy=policy,
        handoff_threshold=threshold,
        ui_language=language,
        latency_fair=latency_fair,
    )
    try:
        with session_scope(url) as session:
            if if_missing and session.scalar(select(Event.id).where(Event.code == normalize_code(code))):
                typer.echo(f"Event {normalize_code(code)} exists already.")
                return
            event = create_event(session, spec, POLICY_NAMES, editor=OPERATOR)
    except EventInvalid as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Created event {event.code}: {name} ({region.value}, {city}).")


@app.command("list")
def list_() -> None:
    """List events."""
    url = get_settings().resolved_database_url
    ensure_migrated(url)
    with session_scope(url) as session:
        for event in list_events(session):
            typer.echo(f"{event.code}\t{event.region}\t{event.city}\t{event.name}")
