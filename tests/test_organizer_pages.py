"""The organizer side of the app through Streamlit's AppTest: sign-in, lock-out, every page, moderation."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db.models import Event, Vote
from db.session import session_scope
from feedback.demo_data import generate
from feedback.export import ExportFilters, write_export
from playground.auth import Identity, add_organizer
from playground.settings import Settings
from playground.untrusted import inert
from tests.conftest import ORGANIZER_PASSWORD, ROOT
from tests.factories import make_event

APP = str(ROOT / "playground" / "app.py")
TIMEOUT = 120


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT).run()


def _sign_in(at: AppTest, username: str, password: str) -> AppTest:
    at.switch_page("views/organizer_signin.py").run()
    at.text_input(key="username").input(username)
    at.text_input(key="password").input(password)
    next(b for b in at.button if b.label == "Sign in").click().run()
    return at


def _signed_in(username: str = "admin", password: str = ORGANIZER_PASSWORD) -> AppTest:
    at = _sign_in(_app(), username, password)
    assert not at.error, [e.value for e in at.error]
    return at


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.fixture
def demo(organizer_env: Settings) -> str:
    url = organizer_env.resolved_database_url
    generate(url, votes=300, seed=3, win_rate=0.65)
    return url


def test_wrong_password_is_refused_and_repeated_failures_lock_the_account(organizer_env: Settings) -> None:
    at = _sign_in(_app(), "admin", "not-the-password")
    assert at.error[0].value == "Wrong username or password."
    assert not at.metric
    for _ in range(2):
        at = _sign_in(at, "admin", "still-not-it")
    assert "Too many failed sign-ins. Try again in 30 seconds." in at.error[0].value
    at = _sign_in(at, "admin", ORGANIZER_PASSWORD)  # locked: even the right password waits
    assert "Too many failed sign-ins" in at.error[0].value
    assert "organizer" not in at.session_state
    assert ORGANIZER_PASSWORD not in str([e.value for e in at.error])


def test_organizer_pages_are_not_reachable_without_signing_in(organizer_env: Settings) -> None:
    at = _app()
    for page in ("overview", "regions", "comments", "events", "exports"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(f"views/organizer_{page}.py")
    # run directly (not through the navigation), the page refuses too
    direct = AppTest.from_file(
        str(ROOT / "playground" / "views" / "organizer_comments.py"), default_timeout=TIMEOUT
    ).run()
    assert direct.error[0].value == "Sign in as an organizer to see this page."


def test_sign_in_shows_the_live_overview_and_sign_out_ends_it(demo: str) -> None:
    at = _signed_in()
    assert at.title[0].value == "Live overview"
    with session_scope(demo) as session:
        votes = session.scalar(select(func.count()).select_from(Vote))
    assert _metric(at, "Votes") == f"{votes:,}"
    assert _metric(at, "Handoff-on win rate").endswith("%")
    assert any("95% CI" in c.value for c in at.caption)
    assert not at.exception
    at.button(key="sign_out").click().run()
    assert at.title[0].value == "Organizer sign-in" and not at.metric


def test_an_expired_sign_in_goes_back_to_the_sign_in_page(organizer_env: Settings) -> None:
    at = _app()
    at.session_state["organizer"] = Identity("admin", "admin", None, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    at.switch_page("views/organizer_signin.py").run()
    assert at.title[0].value == "Organizer sign-in"
    assert at.warning[0].value == "Your organizer sign-in expired; sign in again."


@pytest.mark.parametrize(
    ("page", "expect"),
    [
        ("views/organizer_overview.py", "Live overview"),
        ("views/organizer_regions.py", "Compare regions"),
        ("views/organizer_comments.py", "Comments"),
        ("views/organizer_events.py", "Events"),
        ("views/organizer_exports.py", "Exports & reports"),
    ],
)
def test_each_page_renders_with_demo_data(demo: str, page: str, expect: str) -> None:
    at = _signed_in()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert at.title[0].value == expect
    assert not at.error


def test_region_comparison_shows_every_region(demo: str) -> None:
    at = _signed_in()
    at.switch_page("views/organizer_regions.py").run()
    table = at.dataframe[0].value
    assert list(table.columns) == ["San Francisco", "Europe", "APAC"]
    with session_scope(demo) as session:
        total = session.scalar(select(func.count()).select_from(Vote))
    assert sum(int(v) for v in table.loc["votes"]) == total


def test_an_organizer_sees_only_their_event(demo: str) -> None:
    with session_scope(demo) as session:
        event = session.scalar(select(Event).order_by(Event.id))
        add_organizer(session, "mia", "mia-password-123", "organizer", event)
        code, own_votes = event.code, session.scalar(select(func.count()).where(Vote.event_id == event.id))
    at = _signed_in("mia", "mia-password-123")
    assert at.selectbox(key="overview_scope").options == [f"Event: {code} · {event.name}"]
    assert _metric(at, "Votes") == f"{own_votes:,}"
    with pytest.raises(ValueError, match="Could not find a navigation page"):  # admins only
        at.switch_page("views/organizer_regions.py")
    at.switch_page("views/organizer_comments.py").run()
    assert {c.value.split(" · ")[0].strip("*") for c in at.markdown if " · " in c.value} == {code}


def _report_summary(at: AppTest) -> dict:
    at.switch_page("views/organizer_exports.py").run()
    at.button(key="build_report").click().run()
    assert not at.exception, at.exception
    (paths,) = at.session_state["reports_built"].values()
    return json.loads(Path(paths["json"]).read_text())


def test_hiding_a_comment_removes_it_from_the_report_and_exports(demo: str, tmp_path: Path) -> None:
    at = _signed_in()
    before = _report_summary(at)
    at.switch_page("views/organizer_comments.py").run()
    hide = next(b for b in at.button if b.key and b.key.startswith("hide_vote_"))
    vote_id = int(hide.key.rsplit("_", 1)[1])
    with session_scope(demo) as session:
        comment = session.get(Vote, vote_id).comment
    hide.click().run()
    assert not at.exception
    assert not any(b.key == f"hide_vote_{vote_id}" for b in at.button)
    with session_scope(demo) as session:  # kept, with who and when
        vote = session.get(Vote, vote_id)
        assert vote.hidden_by == "admin" and vote.hidden_at is not None and vote.comment == comment
    after = _report_summary(at)
    assert after["overall"]["votes"] == before["overall"]["votes"] - 1
    result = write_export(demo, "jsonl", tmp_path / "out.jsonl", ExportFilters())
    exported = [json.loads(line) for line in result.path.read_text().splitlines()]
    vote_ids = {v["id"] for c in exported for t in c["turns"] for v in t.get("votes", [])}
    assert vote_ids and vote_id not in vote_ids


def test_events_page_creates_an_event_and_shows_its_qr_code(organizer_env: Settings) -> None:
    at = _signed_in()
    at.switch_page("views/organizer_events.py").run()
    at.text_input(key="event_code_new").input("apac-7")
    at.text_input(key="event_name_new").input("Tokyo meetup")
    at.selectbox(key="event_region_new").set_value("apac")
    at.text_input(key="event_city_new").input("Tokyo")
    at.selectbox(key="event_timezone_new").set_value("Asia/Tokyo")
    at.text_input(key="event_budget_new").input("12.5")
    at.text_area(key="event_like_new").input("accurate, polite")
    next(b for b in at.button if b.label == "Create event").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.success[0].value == "Saved event APAC-7 · Tokyo meetup."
    assert at.code[0].value.endswith("/?event=APAC-7")
    with session_scope(organizer_env.resolved_database_url) as session:
        event = session.scalar(select(Event).where(Event.code == "APAC-7"))
        assert (event.region, event.timezone, str(event.cloud_budget)) == ("apac", "Asia/Tokyo", "12.500000")
        assert event.like_tags == ["accurate", "polite"]


def test_events_page_explains_invalid_input(organizer_env: Settings) -> None:
    at = _signed_in()
    at.switch_page("views/organizer_events.py").run()
    at.text_input(key="event_code_new").input("X1")
    at.text_input(key="event_name_new").input("Test")
    at.text_input(key="event_city_new").input("Paris")
    at.text_input(key="event_budget_new").input("lots")
    next(b for b in at.button if b.label == "Create event").click().run()
    assert at.error[0].value == "Budget: a number like 25 or 12.50, or empty for no limit."


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "arena", "dpo"])
def test_exports_page_builds_every_format_for_download(demo: str, fmt: str) -> None:
    at = _signed_in()
    at.switch_page("views/organizer_exports.py").run()
    at.button(key=f"build_{fmt}").click().run()
    assert not at.exception, at.exception
    (entry,) = at.session_state["exports_built"].values()
    assert int(entry["rows"]) > 0 and Path(entry["path"]).stat().st_size > 0 and Path(entry["card"]).exists()


def test_an_organizer_edits_their_event_but_not_its_budget_policy_or_code(organizer_env: Settings) -> None:
    url = organizer_env.resolved_database_url
    event_id = make_event(url, "SF-1", "sf", cloud_budget=5, handoff_policy="never")
    with session_scope(url) as session:
        event = session.get(Event, event_id)
        add_organizer(session, "mia", "mia-password-123", "organizer", event)
        suffix = event.id
    at = _signed_in("mia", "mia-password-123")
    at.switch_page("views/organizer_events.py").run()
    for key in ("code", "region", "budget", "currency", "policy", "threshold", "default_threshold"):
        assert next(w for w in at.main if getattr(w, "key", None) == f"event_{key}_{suffix}").disabled, key
    # the service refuses these fields for an organizer too (tests/test_event_admin.py): a page bug can't open them
    at.text_input(key=f"event_city_{suffix}").input("Oakland")
    next(b for b in at.button if b.label == "Save changes").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    with session_scope(url) as session:
        stored = session.get(Event, suffix)
        assert (stored.cloud_budget, stored.handoff_policy, stored.city) == (5, "never", "Oakland")


def test_comments_show_attendee_markdown_as_plain_text(demo: str) -> None:
    hostile = "![pixel](https://tracker.example/p.png)\n# URGENT: [re-enter your password](https://phish.example)"
    with session_scope(demo) as session:
        vote = session.scalar(select(Vote).where(Vote.comment.is_not(None)).order_by(Vote.created_at.desc()))
        vote.comment = hostile
        vote.created_at = dt.datetime.now(dt.UTC)  # first in the feed
    at = _signed_in()
    at.switch_page("views/organizer_comments.py").run()
    assert not at.exception
    shown = [m.value for m in at.markdown]
    assert inert(hostile) in shown
    assert not any("](" in value or "![" in value for value in shown)


def test_a_rebuilt_export_replaces_the_old_file_and_stale_builds_are_removed(demo: str, tmp_path: Path) -> None:
    stale = tmp_path / "exports" / "20200101T000000-abcdef-jsonl.jsonl"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("old attendee text")
    os.utime(stale, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    at = _signed_in()
    at.switch_page("views/organizer_exports.py").run()
    assert not stale.exists()
    at.button(key="build_csv").click().run()
    (first,) = at.session_state["exports_built"].values()
    at.button(key="build_csv").click().run()
    assert not at.exception
    (second,) = at.session_state["exports_built"].values()
    assert second["path"] != first["path"] and Path(second["path"]).exists()
    assert not Path(first["path"]).exists() and not Path(first["card"]).exists()
