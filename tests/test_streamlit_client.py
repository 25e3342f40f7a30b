"""The app benchmark's browserless attendee (``bench.streamlit_client``) against a real ``streamlit run``.

It must drive the page as Chromium does (consent, a prompt through the chat input, the round's feedback
form) over Streamlit's own protocol, and read the answer panes as the server sent them: the benchmark's
figures are only as true as this client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bench.hall_app import THINKING
from bench.streamlit_client import StreamlitPage
from db.models import Answer
from db.session import session_scope
from playground.settings import Settings
from playground.untrusted import answer_markdown
from tests.conftest import streamlit_app
from tests.factories import make_event

pytestmark = [pytest.mark.slow]
TIMEOUT_S = 600.0  # a hang guard for a loaded 2-core machine, not a speed target


@pytest.fixture
def app_url(app_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real app, an event that never hands off: one local generation shown in both panes."""
    monkeypatch.setenv("HANDOFF_HANDOFF_POLICY", "never")
    monkeypatch.setenv("HANDOFF_SHADOW_RATE", "0")
    make_event(app_env.resolved_database_url, "WS-2026", "sf", ui_language="en")
    with streamlit_app(tmp_path / "streamlit.log") as base:
        yield base


async def _turn(base: str, prompt: str) -> StreamlitPage:
    page = await StreamlitPage.open(f"{base}/?event=WS-2026", placeholder=THINKING)
    try:
        await page.wait_for(lambda p: "consent_accept" in p.widgets, TIMEOUT_S)  # once the model is warm
        assert "prompt" not in page.page.widgets  # consent comes first
        await page.click("consent_accept")
        await page.wait_for(lambda p: "prompt" in p.widgets and not p.widgets["prompt"].disabled, TIMEOUT_S)
        await page.send("prompt", prompt)
        await page.wait_for(lambda p: "save_feedback" in p.widgets, TIMEOUT_S)
    finally:
        await page.close()
    return page


def test_a_page_driven_over_the_websocket_gets_its_answer_and_the_feedback_form(app_env: Settings, app_url: str):
    page = asyncio.run(_turn(app_url, "Name a primary colour."))

    with session_scope(app_env.resolved_database_url) as session:
        local = session.scalars(select(Answer).where(Answer.arm == "off")).one()
        assert local.tokens_out and local.text
    assert page.page.first_text_at is not None and THINKING not in page.page.first_text  # the answer's first words
    assert answer_markdown(local.text) in page.page.panes.values()  # the pane as the server last drew it
    assert page.page.pane_changes >= 2  # "Thinking…", then the answer as it grew


def test_a_key_the_page_never_drew_is_a_clear_error(app_env: Settings, app_url: str):
    async def click_missing() -> None:
        page = await StreamlitPage.open(f"{app_url}/?event=WS-2026")
        try:
            await page.wait_for(lambda p: "consent_accept" in p.widgets, TIMEOUT_S)
            await page.click("no_such_button")
        finally:
            await page.close()

    with pytest.raises(KeyError, match="no_such_button"):
        asyncio.run(click_missing())
