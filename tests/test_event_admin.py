"""Event create/edit rules, the attendee link and QR code, and the organizer CLI."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from db.events import EventInvalid, EventSpec, create_event, parse_tags, update_event
from db.models import Event, Organizer
from db.session import session_scope
from playground.cli import app as cli
from playground.event_link import attendee_link, qr_code
from playground.settings import Settings

SPEC = EventSpec(
    code="sf-2026",
    name="SF Dev Day",
    region="sf",
    city="San Francisco",
    timezone="America/Los_Angeles",
    starts_on=dt.date(2026, 6, 1),
    ends_on=dt.date(2026, 6, 2),
    cloud_budget=Decimal("25"),
    handoff_policy="confidence",
    handoff_threshold=0.4,
    like_tags=["accurate", "concise"],
    consent_text="  We keep your prompts.  ",
)


def test_created_event_keeps_every_setting_normalized(db_url: str) -> None:
    with session_scope(db_url) as session:
        event_id = create_event(session, SPEC, ("confidence", "never")).id
    with session_scope(db_url) as session:
        event = session.get(Event, event_id)
        assert (event.code, event.timezone, event.handoff_threshold) == ("SF-2026", "America/Los_Angeles", 0.4)
        assert event.cloud_budget == Decimal("25") and event.like_tags == ["accurate", "concise"]
        assert event.dislike_tags is None and event.consent_text == "We keep your prompts."
        assert EventSpec.of(event).like_tags == ["accurate", "concise"]


def test_editing_an_event_changes_it_and_refuses_a_taken_code(db_url: str) -> None:
    with session_scope(db_url) as session:
        sf = create_event(session, SPEC)
        create_event(session, EventSpec(code="EU-1", name="EU", region="europe", city="Paris"))
        edited = EventSpec.of(sf)
        edited.city, edited.cloud_budget, edited.handoff_policy = "Oakland", None, None
        update_event(session, sf.id, edited)
        edited.code = "eu-1"
        with pytest.raises(EventInvalid, match="EU-1 exists already"):
            update_event(session, sf.id, edited)
    with session_scope(db_url) as session:
        event = session.scalar(select(Event).where(Event.code == "SF-2026"))
        assert event.city == "Oakland" and event.cloud_budget is None and event.handoff_policy is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"code": "a b"}, "Code:"),
        ({"name": " "}, "Name:"),
        ({"region": "mars"}, "Region: one of sf, europe, apac"),
        ({"timezone": "Mars/Base"}, "not an IANA name"),
        ({"ends_on": dt.date(2026, 5, 1)}, "end before it starts"),
        ({"cloud_budget": Decimal("-1")}, "Budget:"),
        ({"handoff_threshold": 1.5}, "between 0 and 1"),
        ({"handoff_policy": "magic"}, "Policy: one of confidence, never"),
    ],
)
def test_invalid_event_settings_name_the_field_to_fix(sqlite_url: str, change: dict, message: str) -> None:
    spec = EventSpec(**{**vars(SPEC), **change})
    with session_scope(sqlite_url) as session, pytest.raises(EventInvalid, match=message):
        create_event(session, spec, ("confidence", "never"))


def test_tags_are_split_trimmed_and_deduplicated() -> None:
    assert parse_tags(" accurate, concise\nfriendly,,accurate ") == ["accurate", "concise", "friendly"]


def test_attendee_link_and_qr_code() -> None:
    link = attendee_link("SF-2026", Settings(public_url="https://play.example.org/"))
    assert link == "https://play.example.org/?event=SF-2026"
    assert attendee_link("EU 1", Settings(port=8600)) == "http://localhost:8600/?event=EU+1"
    assert qr_code(link).startswith(b"\x89PNG\r\n\x1a\n")
    assert b"<svg" in qr_code(link, "svg")


def test_cli_adds_an_organizer_with_a_hidden_password_prompt(organizer_env: Settings) -> None:
    runner = CliRunner()
    created = runner.invoke(
        cli, ["event", "create", "--code", "SF-1", "--name", "SF", "--region", "sf", "--city", "SF"]
    )
    assert created.exit_code == 0, created.output
    result = runner.invoke(
        cli,
        ["organizer", "add", "--username", "mia", "--role", "organizer", "--event", "SF-1"],
        input="a-long-password\na-long-password\n",
    )
    assert result.exit_code == 0 and "Created organizer mia for event SF-1" in result.output
    assert "a-long-password" not in result.output
    refused = runner.invoke(
        cli,
        ["organizer", "add", "--username", "zoe", "--role", "organizer"],
        env={"HANDOFF_NEW_ORGANIZER_PASSWORD": "a-long-password"},
    )
    assert refused.exit_code == 1 and "--event CODE" in refused.output
    listed = runner.invoke(cli, ["organizer", "list"])
    assert "mia\torganizer\tSF-1\tactive" in listed.output and "argon2" not in listed.output
    with session_scope(organizer_env.resolved_database_url) as session:
        assert session.scalar(select(Organizer.password_hash)).startswith("$argon2id$")
