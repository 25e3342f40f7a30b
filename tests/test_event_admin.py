"""Event create/edit rules, the attendee link and QR code, and the organizer CLI."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from db.events import (
    OPERATOR,
    EventForbidden,
    EventInvalid,
    EventSpec,
    Operator,
    create_event,
    parse_tags,
    update_event,
)
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
        event_id = create_event(session, SPEC, ("confidence", "never"), editor=OPERATOR).id
    with session_scope(db_url) as session:
        event = session.get(Event, event_id)
        assert (event.code, event.timezone, event.handoff_threshold) == ("SF-2026", "America/Los_Angeles", 0.4)
        assert event.cloud_budget == Decimal("25") and event.like_tags == ["accurate", "concise"]
        assert event.dislike_tags is None and event.consent_text == "We keep your prompts."
        assert EventSpec.of(event).like_tags == ["accurate", "concise"]


def test_editing_an_event_changes_it_and_refuses_a_taken_code(db_url: str) -> None:
    with session_scope(db_url) as session:
        sf = create_event(session, SPEC, editor=OPERATOR)
        create_event(session, EventSpec(code="EU-1", name="EU", region="europe", city="Paris"), editor=OPERATOR)
        edited = EventSpec.of(sf)
        edited.city, edited.cloud_budget, edited.handoff_policy = "Oakland", None, None
        update_event(session, sf.id, edited, editor=OPERATOR)
        edited.code = "eu-1"
        with pytest.raises(EventInvalid, match="EU-1 exists already"):
            update_event(session, sf.id, edited, editor=OPERATOR)
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
        ({"cloud_budget": Decimal("NaN")}, "Budget: a number from 0 to 999,999.99"),
        ({"cloud_budget": Decimal("Infinity")}, "Budget: a number from 0"),
        ({"cloud_budget": Decimal("1e15")}, "Budget: a number from 0"),
        ({"handoff_threshold": float("nan")}, "between 0 and 1"),
        ({"name": "SF\x00Day"}, "Name: remove the NUL character"),
        ({"consent_text": "ok\x00"}, "Consent text: remove the NUL"),
        ({"like_tags": ["a\x00"]}, "Tags: remove the NUL"),
        ({"name": "x" * 201}, "Name: at most 200 characters"),
        ({"city": "y" * 101}, "City: at most 100 characters"),
    ],
)
def test_invalid_event_settings_name_the_field_to_fix(db_url: str, change: dict, message: str) -> None:
    spec = EventSpec(**{**vars(SPEC), **change})
    with session_scope(db_url) as session, pytest.raises(EventInvalid, match=message):
        create_event(session, spec, ("confidence", "never"), editor=OPERATOR)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cloud_budget": None}, "cloud_budget"),
        ({"cloud_budget": Decimal("1000")}, "cloud_budget"),
        ({"currency": "EUR"}, "currency"),
        ({"handoff_policy": "always"}, "handoff_policy"),
        ({"handoff_threshold": 0.0}, "handoff_threshold"),
        ({"region": "europe"}, "region"),
        ({"code": "MINE-1"}, "code"),
    ],
)
def test_an_organizer_cannot_change_money_routing_or_code_of_their_event(db_url: str, change: dict, field: str) -> None:
    with session_scope(db_url) as session:
        event_id = create_event(session, SPEC, editor=OPERATOR).id
    organizer = Operator(is_admin=False, event_id=event_id)
    with session_scope(db_url) as session:
        spec = EventSpec(**{**vars(EventSpec.of(session.get(Event, event_id))), **change})
        with pytest.raises(EventForbidden, match=f"Only an admin can change {field}"):
            update_event(session, event_id, spec, ("confidence", "always"), editor=organizer)
    with session_scope(db_url) as session:
        event = session.get(Event, event_id)
        assert (event.code, event.region, event.cloud_budget, event.currency) == ("SF-2026", "sf", Decimal("25"), "USD")
        assert (event.handoff_policy, event.handoff_threshold) == ("confidence", 0.4)


def test_an_organizer_edits_the_rest_of_their_own_event_only(db_url: str) -> None:
    with session_scope(db_url) as session:
        own = create_event(session, SPEC, editor=OPERATOR).id
        other = create_event(
            session, EventSpec(code="EU-1", name="EU", region="europe", city="Paris"), editor=OPERATOR
        ).id
    organizer = Operator(is_admin=False, event_id=own)
    with session_scope(db_url) as session:
        spec = EventSpec.of(session.get(Event, own))
        spec.name, spec.city, spec.like_tags = "SF Day 2", "Oakland", ["clear"]
        update_event(session, own, spec, editor=organizer)
        with pytest.raises(EventForbidden, match="only edit your own event"):
            update_event(session, other, EventSpec.of(session.get(Event, other)), editor=organizer)
        with pytest.raises(EventForbidden, match="Only an admin can create"):
            create_event(session, EventSpec(code="NEW-1", name="New", region="sf", city="SF"), editor=organizer)
    with session_scope(db_url) as session:
        event = session.get(Event, own)
        assert (event.name, event.city, event.like_tags, event.cloud_budget) == (
            "SF Day 2",
            "Oakland",
            ["clear"],
            Decimal("25"),
        )


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
