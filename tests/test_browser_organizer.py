"""The organizer side in real headless Chromium (Debian's) against a real ``streamlit run``: sign in,
watch the live numbers move when a vote arrives, and download an export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from playground.settings import Settings
from tests.conftest import ORGANIZER_PASSWORD, streamlit_app
from tests.factories import make_event
from tests.organizer_data import Round, add_rounds

pytestmark = pytest.mark.browser
WAIT = 60_000  # ms


@pytest.fixture
def seeded(organizer_env: Settings) -> int:
    event = make_event(organizer_env.resolved_database_url, "SF-LIVE", "sf", cloud_budget=Decimal("5"))
    add_rounds(organizer_env.resolved_database_url, event, [Round("on", comment="nice"), Round("off"), Round("tie")])
    return event


@pytest.fixture
def app_url(organizer_env: Settings, seeded: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real app with the organizer settings, refreshing the overview every second."""
    monkeypatch.setenv("HANDOFF_ORGANIZER_REFRESH_S", "1")
    log_path = tmp_path / "streamlit.log"
    with streamlit_app(log_path) as base:
        yield base
    assert ORGANIZER_PASSWORD not in log_path.read_text()


def _metric(page, label: str):  # noqa: ANN001, ANN202
    return page.get_by_test_id("stMetric").filter(has_text=label).get_by_test_id("stMetricValue")


def test_organizer_signs_in_sees_live_numbers_change_and_downloads_an_export(
    organizer_env: Settings,
    seeded: int,
    app_url: str,
    chromium,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    from playwright.sync_api import expect

    # An attendee opens the app: the sign-in link is there, the organizer pages are not.
    attendee = chromium.new_context().new_page()
    attendee.goto(app_url)
    expect(attendee.get_by_role("link", name="Organizer sign-in")).to_be_visible(timeout=WAIT)

    organizer = chromium.new_context(accept_downloads=True)
    page = organizer.new_page()
    page.goto(f"{app_url}/organizer")
    expect(page.get_by_role("heading", name="Organizer sign-in")).to_be_visible(timeout=WAIT)
    page.get_by_label("Username").fill("admin")
    page.get_by_role("textbox", name="Password").fill(ORGANIZER_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Live overview")).to_be_visible(timeout=WAIT)
    expect(_metric(page, "Votes")).to_have_text("3", timeout=WAIT)

    # Another browser (not signed in) sees the sign-in form at the same address, not the numbers.
    stranger = chromium.new_context().new_page()
    stranger.goto(f"{app_url}/organizer")
    expect(stranger.get_by_role("heading", name="Organizer sign-in")).to_be_visible(timeout=WAIT)
    expect(stranger.get_by_test_id("stMetric")).to_have_count(0)

    # A vote arrives (written through the capture path): the open overview updates by itself.
    add_rounds(organizer_env.resolved_database_url, seeded, [Round("on")])
    expect(_metric(page, "Votes")).to_have_text("4", timeout=WAIT)

    page.get_by_role("link", name="Exports & reports").click()
    expect(page.get_by_role("heading", name="Exports & reports")).to_be_visible(timeout=WAIT)
    page.get_by_role("button", name="Build csv").click()
    download_button = page.get_by_role("button", name="Download csv (4 rows)")
    expect(download_button).to_be_visible(timeout=WAIT)
    with page.expect_download(timeout=WAIT) as download:
        download_button.click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == 4 and {r["event"] for r in rows} == {"SF-LIVE"}
    assert {r["comment"] for r in rows} >= {"nice"}
    page.screenshot(path=str(tmp_path / "organizer.png"), full_page=True)
    organizer.close()
