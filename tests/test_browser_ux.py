"""What attendees, the venue screen and researchers see, in real headless Chromium (Debian's) against a
real ``streamlit run`` at desktop (1400 px) and phone (390 px) widths: no developer toolbar, no blank
first render, pills that wrap, energy at the reveal (inside a phone's width too), a results wall that
updates when a vote arrives, and the report's first screen. Screenshots go to ``$TEST_ARTEFACTS`` (default ``test-artefacts/``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Answer, Event, Vote
from db.session import session_scope
from feedback.demo_data import generate
from feedback.export import ExportFilters
from feedback.report import build_report
from playground.settings import Settings
from tests.conftest import ROOT, RUN_DONE, streamlit_app
from tests.organizer_data import Round, add_rounds

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ARTEFACTS = Path(os.environ.get("TEST_ARTEFACTS", ROOT / "test-artefacts"))
LONG = 600_000  # ms: past the stand-in's 300 s per call (conftest), as in test_browser_attendee: a slow first cloud call still ends
WAIT = 60_000
PROMPT = "Write a limerick about a robot who loves tea"
COMMENT = "B rambled — merci"
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def shots() -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    return ARTEFACTS


@pytest.fixture
def app(app_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    """The real app, one event that always hands off and shows its results wall (refreshed every second)."""
    monkeypatch.setenv("HANDOFF_TEMPERATURE", "1.0")  # the stand-in is greedy: keep the panes apart
    monkeypatch.setenv("HANDOFF_WALL_REFRESH_S", "1")
    with session_scope(app_env.resolved_database_url) as session:
        event = Event(
            code="PARIS-2026",
            name="Paris AI Night",
            region="europe",
            city="Paris",
            timezone="Europe/Paris",
            handoff_threshold=0.0,
            ui_language="en",
            wall_enabled=True,
        )
        session.add(event)
        session.flush()
        event_id = event.id
    with streamlit_app(tmp_path / "streamlit.log") as base:
        yield base, event_id


def _no_developer_toolbar(page) -> None:  # noqa: ANN001
    """Viewer mode: no "Deploy" button, and the menu holds only the viewer's items (theme, print)."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stAppDeployButton")).to_have_count(0)
    expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
    page.get_by_test_id("stMainMenu").click()
    menu = page.get_by_test_id("stMainMenuList")
    expect(menu).to_contain_text("Print")
    for developer_item in ("Rerun", "Clear cache", "Deploy", "Settings", "About"):
        expect(menu).not_to_contain_text(developer_item)
    page.keyboard.press("Escape")
    expect(menu).to_have_count(0)


def _pills_fit(page, selector: str) -> None:  # noqa: ANN001
    """Every pill group matching ``selector`` fits its pane: no sideways scrolling, every pill inside."""
    groups = page.locator(f"{selector} [data-testid='stButtonGroup'] > [role]")  # toolbar (multi) or radiogroup
    groups.first.wait_for(timeout=WAIT)
    for index in range(groups.count()):
        overflow = groups.nth(index).evaluate(
            """group => {
                const box = group.getBoundingClientRect();
                const outside = [...group.querySelectorAll('button')].filter(b => {
                    const r = b.getBoundingClientRect();
                    return r.right > box.right + 1 || r.left < box.left - 1;
                });
                return {scroll: group.scrollWidth - group.clientWidth, outside: outside.length};
            }"""
        )
        assert overflow == {"scroll": 0, "outside": 0}, overflow


def _metric(page, label: str):  # noqa: ANN001, ANN202
    return page.get_by_test_id("stMetric").filter(has_text=label).get_by_test_id("stMetricValue")


def test_attendee_and_wall_at_desktop_and_phone_widths(
    app: tuple[str, int], app_env: Settings, chromium, shots: Path
) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    base, event_id = app
    url = app_env.resolved_database_url
    desktop = chromium.new_context(viewport=DESKTOP)
    page = desktop.new_page()

    # The first visit of a fresh server: a page at once that says it is warming up, not a blank one.
    page.goto(f"{base}/?event=PARIS-2026")
    expect(page.get_by_text("Warming up")).to_be_visible(timeout=LONG)
    expect(page.get_by_role("heading", name="Handoff Playground")).to_be_visible()
    page.screenshot(path=shots / "desktop-first-render.png")
    _no_developer_toolbar(page)

    page.get_by_text("Paris AI Night · Paris · Europe").wait_for(timeout=LONG)
    page.get_by_role("button", name="I agree, let's start").click()
    _turn_to_reveal(page, shots, "desktop")
    with session_scope(url) as session:
        answers = session.scalars(select(Answer).where(Answer.arm.in_(("off", "on")))).all()
        assert len(answers) == 2 and all(a.energy_wh and a.energy_wh > 0 and a.energy_method for a in answers)

    # The venue screen: live numbers that move when a vote arrives, nothing an attendee wrote.
    wall = desktop.new_page()
    wall.goto(f"{base}/wall?event=PARIS-2026")
    expect(_metric(wall, "Votes")).to_have_text("1", timeout=WAIT)
    _no_developer_toolbar(wall)
    add_rounds(url, event_id, [Round("on")], prompt="another attendee's prompt")
    expect(_metric(wall, "Votes")).to_have_text("2", timeout=WAIT)
    shown = wall.locator("body").inner_text()
    for private in (PROMPT, COMMENT, "another attendee's prompt"):
        assert private not in shown
    wall.screenshot(path=shots / "desktop-wall.png", full_page=True)
    desktop.close()

    phone = chromium.new_context(viewport=PHONE, device_scale_factor=2)
    page = phone.new_page()
    page.goto(f"{base}/?event=PARIS-2026")
    page.get_by_role("button", name="I agree, let's start").click()
    page.get_by_text("Need an idea? Pick a category, then a task.").wait_for(timeout=WAIT)
    _no_developer_toolbar(page)
    _pills_fit(page, ".st-key-category")
    page.screenshot(path=shots / "phone-start.png", full_page=True)
    energy = _turn_to_reveal(page, shots, "phone")  # the reveal and its energy line, 390 px wide
    box = energy.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1, box
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scrolling
    with session_scope(url) as session:
        votes = session.scalar(select(func.count()).select_from(Vote))
    wall = phone.new_page()
    wall.goto(f"{base}/wall?event=PARIS-2026")
    expect(_metric(wall, "Votes")).to_have_text(f"{votes}", timeout=WAIT)
    add_rounds(url, event_id, [Round("off")])
    expect(_metric(wall, "Votes")).to_have_text(f"{votes + 1}", timeout=WAIT)
    wall.screenshot(path=shots / "phone-wall.png", full_page=True)
    phone.close()


def _turn_to_reveal(page, shots: Path, width: str):  # noqa: ANN001, ANN202
    """One prompt, feedback saved, then the reveal: its energy line is shown (returned, for layout checks)."""
    from playwright.sync_api import expect

    chat = page.get_by_placeholder("Ask anything: both answers arrive side by side")
    chat.fill(PROMPT)
    chat.press("Enter")
    page.get_by_role("button", name="Save feedback").wait_for(timeout=LONG)
    page.locator(RUN_DONE).wait_for(timeout=LONG)
    _pills_fit(page, "[class*='st-key-tags_']")
    page.screenshot(path=shots / f"{width}-feedback.png", full_page=True)
    if page.locator("[class*='st-key-winner_']").count():  # the panes differ (the cloud answered)
        page.locator("[class*='st-key-winner_']").get_by_text("B is better").click()
    else:  # identical panes (the cloud call failed): rate the one answer (st.feedback's stars are radios)
        page.locator("[class*='st-key-stars_both_']").get_by_role("radio", name="4 out of 5 stars").click()
    page.locator("[class*='st-key-comment_'] textarea").fill(COMMENT)
    page.locator("[class*='st-key-comment_'] textarea").press("Control+Enter")
    page.get_by_role("button", name="Save feedback").click()
    page.get_by_role("button", name="Reveal which side had handoff").click()
    page.get_by_text("The reveal", exact=True).wait_for(timeout=WAIT)
    energy = page.get_by_text("energy and cost (estimates): A")
    expect(energy).to_be_visible(timeout=WAIT)
    assert "Wh" in energy.inner_text()
    page.screenshot(path=shots / f"{width}-reveal.png", full_page=True)
    return energy


def test_report_leads_with_a_one_screen_summary(sqlite_url: str, chromium, shots: Path) -> None:  # noqa: ANN001
    generate(sqlite_url, 1500, seed=5, win_rate=0.65)
    result = build_report(sqlite_url, shots / "report", ExportFilters(), seed=1, rounds=50)
    page = chromium.new_context(viewport=DESKTOP, offline=True).new_page()  # offline: nothing to fetch
    page.goto(result.html_path.as_uri())
    lead = page.locator(".lead")
    assert "Handoff helps" in lead.inner_text() and "At what cost" in lead.inner_text()
    box = lead.bounding_box()
    assert box is not None and box["y"] + box["height"] <= DESKTOP["height"]  # the answer is on the first screen
    assert page.locator("details").count() >= 5 and page.locator("details[open]").count() == 0
    page.screenshot(path=shots / "report-first-screen.png")
    page.screenshot(path=shots / "report-full.png", full_page=True)
    page.context.close()
