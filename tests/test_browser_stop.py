"""Stop while an answer streams, in real headless Chromium (Debian's) against a real ``streamlit run``.

What Stop means (``playground.turn_runner``): a stopped pane keeps the answer as it was shown and stops
growing, the other pane goes on, and the turn is stored with the stopped answer cut to what was shown and
``finish_reason = "stopped"`` (``tokens_out`` unknown); stopping both panes abandons the prompt and stores
nothing. Either way the attendee goes on: votes on the stored round, sends the next prompt.

Answers are long here (``HANDOFF_MAX_NEW_TOKENS`` 256, the product's default), so a click lands while
text is still arriving. The event never hands off and makes no shadow calls: the local answer streams in
the handoff-off pane and the handoff pane shows the same answer once it is complete, so a turn takes one
local answer (the cloud stand-in took 395 s for 256 tokens on a loaded 2-core machine).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Answer, Conversation, Turn, Vote
from db.session import session_scope
from playground.settings import Settings
from tests.conftest import RUN_DONE, streamlit_app
from tests.factories import make_event

pytestmark = [pytest.mark.browser, pytest.mark.slow]
LONG = 600_000  # ms: a hang guard for the first answer (model load on a loaded CPU), as in test_browser_attendee
WAIT = 120_000  # ms: one rerun or one more delta on a loaded CPU
STOPPED_WITHIN_S = 20.0  # a clicked pane says it stopped within this (one rerun, on a loaded 2-core CPU)
STILL_S = 1.5  # the stopped pane's text, unchanged this long after it says so, is what it keeps
PROMPT = "Tell me a long story about a lighthouse keeper during a storm, in several paragraphs."
PANES = ("a", "b")


@pytest.fixture
def app_url(app_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real app, long answers, one event whose answers stay local (no shadow call either)."""
    monkeypatch.setenv("HANDOFF_MAX_NEW_TOKENS", "256")
    monkeypatch.setenv("HANDOFF_SHADOW_RATE", "0")
    make_event(
        app_env.resolved_database_url,
        "STOP-2026",
        "europe",
        name="Stop Night",
        city="Lyon",
        timezone="Europe/Paris",
        handoff_policy="never",
        ui_language="en",
    )
    with streamlit_app(tmp_path / "streamlit.log") as base:
        yield base


def _pane(page, pane: str):  # noqa: ANN001, ANN202 - playwright Page and Locator
    return page.get_by_test_id("stColumn").filter(has=page.get_by_role("heading", name=f"Answer {pane.upper()}"))


def _answer_text(page, pane: str) -> str:  # noqa: ANN001
    """The text of the pane's latest answer as the attendee reads it ("" while it only thinks)."""
    answers = _pane(page, pane).get_by_role("group", name="Chat message from assistant")
    answer = answers.last.get_by_test_id("stMarkdownContainer").filter(has_not_text="Stopped here.").first
    try:
        text = answer.inner_text(timeout=5_000).strip()
    except Exception:  # noqa: BLE001 - redrawn under our feet: read again next time
        return ""
    return "" if text.startswith("Thinking") else text


def _letters(text: str) -> str:
    """Markdown source and its rendering compare on their letters (list markers, emphasis and escapes differ)."""
    return re.sub(r"[^a-z]", "", text.lower())


def _no_error_shown(page) -> None:  # noqa: ANN001
    assert page.get_by_test_id("stException").count() == 0
    assert page.get_by_test_id("stAlertContentError").count() == 0


def _nothing_stale(page) -> None:  # noqa: ANN001
    """No element left over from an earlier run: Streamlit greys those out until the run that replaced them ends,
    and a streaming run lasts as long as the turn."""
    stale = page.locator("[data-stale='true']:not(:has(> [data-testid='stEmpty']))")  # an empty slot shows nothing
    deadline = time.monotonic() + 10
    while stale.count() and time.monotonic() < deadline:  # a rerun in progress replaces them in a moment
        time.sleep(0.2)
    left = stale.evaluate_all("nodes => nodes.map(n => [n.getAttribute('data-testid'), n.innerText.slice(0, 60)])")
    assert left == [], f"left over from an earlier run: {left}"


def _streaming_pane(page) -> str:  # noqa: ANN001
    """The first pane seen growing: text arrived in it twice in a row, so its answer is still being written."""
    deadline = time.monotonic() + LONG / 1000
    seen = dict.fromkeys(PANES, "")
    while time.monotonic() < deadline:
        for pane in PANES:
            text = _answer_text(page, pane)
            if len(text) > len(seen[pane]) >= 40:
                return pane
            seen[pane] = text
        time.sleep(0.3)
    pytest.fail(f"no pane streamed: {seen}")


def _stop(page, pane: str) -> tuple[str, float]:  # noqa: ANN001
    """Click Stop in ``pane`` while it streams; returns the answer the page then keeps, and the seconds from the
    click until the pane says it stopped."""
    from playwright.sync_api import expect

    _pane(page, pane).get_by_role("button", name=f"Stop {pane.upper()}").click()
    clicked = time.monotonic()
    expect(_pane(page, pane).get_by_text("Stopped here.")).to_be_visible(timeout=STOPPED_WITHIN_S * 1000)
    acknowledged_s = time.monotonic() - clicked
    text, still_since = "", time.monotonic()
    while not text or time.monotonic() - still_since < STILL_S:  # the run that applied the stop has drawn it
        time.sleep(0.2)
        now = _answer_text(page, pane)
        if now != text:
            text, still_since = now, time.monotonic()
    return text, acknowledged_s


def test_stop_while_streaming_keeps_the_partial_answer_and_the_attendee_goes_on(
    app_env: Settings,
    app_url: str,
    chromium,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    from playwright.sync_api import expect

    url = app_env.resolved_database_url
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(WAIT)
    page = context.new_page()
    page.goto(f"{app_url}/?event=STOP-2026")
    page.get_by_text("Stop Night · Lyon · Europe").wait_for(timeout=LONG)
    page.get_by_role("button", name="I agree, let's start").click()
    chat = page.get_by_placeholder("Ask anything: both answers arrive side by side")
    chat.fill(PROMPT)
    chat.press("Enter")

    # Round 1: stop one pane while its text is still arriving.
    stopped = _streaming_pane(page)
    expect(chat).to_be_disabled()  # one prompt at a time: a second one sent now would be dropped
    _nothing_stale(page)  # e.g. the sample tasks of the page before the prompt
    other = "b" if stopped == "a" else "a"
    before = _answer_text(page, stopped)
    frozen, acknowledged_s = _stop(page, stopped)
    print(
        f"pane {stopped} stopped: said so {acknowledged_s:.1f} s after the click, {len(before)} -> {len(frozen)} chars"
    )
    page.screenshot(path=tmp_path / "after-stop.png", full_page=True)
    # Nothing left over from an earlier run (Streamlit greys such elements out until the run ends, and this run
    # streams until the turn ends): the panes once, and no stale sample tasks or notices.
    expect(page.get_by_role("heading", name=f"Answer {stopped.upper()}", exact=True)).to_have_count(1)
    _nothing_stale(page)
    save = page.get_by_role("button", name="Save feedback")
    while not save.count():  # the other pane runs to its end; the stopped one never changes again
        now = _answer_text(page, stopped)
        assert now in ("", frozen), f"the stopped pane changed: {frozen!r} -> {now!r}"
        time.sleep(0.3)
    page.locator(RUN_DONE).wait_for(timeout=WAIT)
    assert _answer_text(page, stopped) == frozen  # the partial answer stays, as it was when it stopped
    expect(_pane(page, stopped).get_by_text("Stopped here.")).to_be_visible()
    expect(_pane(page, other).get_by_text("Stopped here.")).to_have_count(0)
    finished_other = _answer_text(page, other)
    _no_error_shown(page)
    page.screenshot(path=tmp_path / "stopped.png", full_page=True)

    with session_scope(url) as session:
        turns = session.scalars(select(Turn)).all()
        assert [t.prompt for t in turns] == [PROMPT]
        side = session.scalar(select(Conversation.handoff_side))
        answers = {a.arm: a for a in session.scalars(select(Answer).where(Answer.arm.in_(("off", "on"))))}
    arm = {"a": "on" if side == "a" else "off", "b": "off" if side == "a" else "on"}
    kept, went_on = answers[arm[stopped]], answers[arm[other]]
    assert (kept.finish_reason, kept.tokens_out) == ("stopped", None)
    assert _letters(kept.text) == _letters(frozen) != ""  # stored exactly as shown
    assert went_on.finish_reason != "stopped" and _letters(went_on.text) == _letters(finished_other)

    # The attendee votes on the round with the stopped answer…
    page.locator("[class*='st-key-winner_']").get_by_text(f"{other.upper()} is better").click()
    page.get_by_role("button", name="Save feedback").click()
    page.get_by_text("Saved. You can change it until your next prompt.").wait_for(timeout=WAIT)
    with session_scope(url) as session:
        vote = session.scalar(select(Vote))
        assert vote is not None and (vote.winner, vote.turn_id) == (other, turns[0].id)

    # …sends the next prompt and stops both panes: the prompt is abandoned and nothing is stored…
    expect(chat).to_be_enabled(timeout=WAIT)
    chat.fill("Now tell the same story from the storm's point of view.")
    chat.press("Enter")
    first = _streaming_pane(page)
    _pane(page, first).get_by_role("button", name=f"Stop {first.upper()}").click()
    second = "b" if first == "a" else "a"
    _pane(page, second).get_by_role("button", name=f"Stop {second.upper()}").click()
    page.get_by_text("Both answers were stopped, so nothing was saved").wait_for(timeout=WAIT)
    page.locator(RUN_DONE).wait_for(timeout=WAIT)
    _no_error_shown(page)
    with session_scope(url) as session:
        assert len(session.scalars(select(Turn)).all()) == 1
        assert len(session.scalars(select(Vote)).all()) == 1

    # …and can ask again at once, as the page says.
    expect(chat).to_be_enabled(timeout=WAIT)
    chat.fill("A short poem about the lighthouse, please.")
    chat.press("Enter")
    _streaming_pane(page)
    _no_error_shown(page)
    context.close()
