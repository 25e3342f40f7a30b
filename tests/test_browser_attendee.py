"""A whole comparison in real headless Chromium (Debian's), against a real ``streamlit run``.

The app runs with the ``app_env`` settings (a fresh migrated database of each kind, the real stand-in,
the bundled model); afterwards the database must hold exactly what the page confirmed. Screenshots at
phone width in dark mode go to ``$ATTENDEE_SCREENSHOTS`` (default: the test's tmp dir) for a human look.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Answer, Conversation, Participant, Turn, Vote
from db.session import session_scope
from playground.settings import Settings
from tests.conftest import RUN_DONE, streamlit_app
from tests.factories import make_event

pytestmark = [pytest.mark.browser, pytest.mark.slow]
# ms: how long one step may take before the test gives up (a hang guard, not a speed target). The first
# prompt waits for the model to load and warm up; then both arms run on the CPU beside the stand-in. A
# loaded 2-core machine (load average 18) took over 180 s for the first turn of 24 tokens.
LONG = 600_000


@pytest.fixture
def app_url(app_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real app with the app_env settings and one event that always hands off (the panes differ)."""
    monkeypatch.setenv("HANDOFF_TEMPERATURE", "1.0")  # the stand-in is greedy: keep the panes apart
    make_event(
        app_env.resolved_database_url,
        "PARIS-2026",
        "europe",
        name="Paris AI Night",
        city="Paris",
        timezone="Europe/Paris",
        handoff_threshold=0.0,
        ui_language="en",
    )
    with streamlit_app(tmp_path / "streamlit.log") as base:
        yield base


def _assert_panes_differ(page, url: str) -> None:  # noqa: ANN001 - a playwright Page
    """The pairwise vote needs two different answers: when the page shows the identical-answers notice
    instead, say why (a failed cloud call shows the local answer in the handoff pane)."""
    if page.get_by_text("Both answers are identical").count():
        with session_scope(url) as session:
            answers = [(a.arm, a.source, a.error_kind, a.error, a.retries) for a in session.scalars(select(Answer))]
        pytest.fail(f"the panes are identical; answers stored: {answers}")


def test_a_whole_comparison_in_the_browser_lands_in_the_database(
    app_env: Settings,
    app_url: str,
    chromium,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    shots = Path(os.environ.get("ATTENDEE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    # A phone, in dark mode: the layout and the theme must hold up there.
    context = chromium.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark", device_scale_factor=2)
    context.set_default_timeout(LONG)  # every click waits for the rerun before it, however loaded the machine
    page = context.new_page()
    page.goto(f"{app_url}/?event=PARIS-2026")
    page.get_by_text("Paris AI Night · Paris · Europe").wait_for(timeout=LONG)
    page.screenshot(path=shots / "consent.png", full_page=True)
    page.get_by_role("button", name="I agree, let's start").click()

    chat = page.get_by_placeholder("Ask anything: both answers arrive side by side")
    chat.fill("Invent a new fruit and describe it as a markdown list.")
    chat.press("Enter")
    page.get_by_role("button", name="Save feedback").wait_for(timeout=LONG)
    chat.fill("Now write a two-line poem about it, in French.")
    chat.press("Enter")
    page.get_by_text("Turn 2 of 10").wait_for(timeout=LONG)
    page.get_by_role("button", name="Save feedback").wait_for(timeout=LONG)
    _assert_panes_differ(page, app_env.resolved_database_url)

    page.locator(RUN_DONE).wait_for(timeout=LONG)  # round 1's feedback widgets are gone
    page.screenshot(path=shots / "answers.png", full_page=True)
    page.locator("[class*='st-key-winner_']").get_by_text("A is better").click()
    page.locator("[class*='st-key-tags_a_']").get_by_text("Accurate").click()
    page.locator("[class*='st-key-tags_b_']").get_by_text("Too verbose").click()
    page.locator("[class*='st-key-comment_'] textarea").fill("A was clearer — merci ✨")
    page.locator("[class*='st-key-comment_'] textarea").press("Control+Enter")
    page.screenshot(path=shots / "feedback.png", full_page=True)
    save = page.get_by_role("button", name="Save feedback")
    save.click()
    page.get_by_text("Saved. You can change it until your next prompt.").wait_for(timeout=LONG)
    page.get_by_role("button", name="Update feedback").dblclick()  # a double click stores nothing twice
    page.get_by_role("button", name="Reveal which side had handoff").click()
    page.get_by_text("The reveal").wait_for(timeout=LONG)
    page.screenshot(path=shots / "reveal.png", full_page=True)
    context.close()

    with session_scope(app_env.resolved_database_url) as session:
        assert len(session.scalars(select(Participant)).all()) == 1
        conversation = session.scalar(select(Conversation))
        turns = session.scalars(select(Turn).order_by(Turn.index)).all()
        assert [t.prompt for t in turns] == [
            "Invent a new fruit and describe it as a markdown list.",
            "Now write a two-line poem about it, in French.",
        ]
        assert len(session.scalars(select(Answer)).all()) == 4
        votes = session.scalars(select(Vote)).all()
        assert len(votes) == 1
        vote = votes[0]
        assert (vote.winner, vote.comment, vote.final, vote.turn_id) == (
            "a",
            "A was clearer — merci ✨",
            True,
            turns[1].id,
        )
        assert vote.winner_arm == ("on" if conversation.handoff_side == "a" else "off")
        tags = {r.arm: r.tags for r in vote.ratings}
        a_arm, b_arm = ("on", "off") if conversation.handoff_side == "a" else ("off", "on")
        assert tags == {a_arm: ["accurate"], b_arm: ["too_verbose"]}
