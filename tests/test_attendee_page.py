"""The attendee page through Streamlit's AppTest, with the real model and the real stand-in."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db.models import Answer, Event, HandoffDecision, Vote
from db.session import session_scope
from playground.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
PAGE = str(ROOT / "playground" / "pages" / "attendee.py")
TIMEOUT = 180


@pytest.fixture
def event_code(app_env: Settings) -> str:
    with session_scope(app_env.resolved_database_url) as session:
        session.add(Event(code="SF-2026", name="SF Dev Day", region="sf", city="San Francisco", timezone="America/Los_Angeles"))
    return "SF-2026"


def _joined(code: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["event"] = code
    at.run()
    at.button(key="consent_accept").click().run()
    return at


def test_unknown_event_code_gets_a_clear_message(app_env: Settings) -> None:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    at.text_input(key="event_code").input("NOPE-1")
    at.button(key="join").click().run()
    assert "No event with code 'NOPE-1'" in at.error[0].value
    assert not at.chat_input


def test_unmigrated_database_is_refused(app_env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from playground.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert "handoff db upgrade" in at.error[0].value


def test_a_whole_comparison_stores_one_vote_with_both_answers(app_env: Settings, event_code: str) -> None:
    at = _joined(event_code)
    at.chat_input(key="prompt").set_value("What is the capital of Japan?").run()
    assert not at.exception
    assert len(at.chat_message) == 4  # prompt + answer in each pane
    if at.radio:
        at.radio(key="winner").set_value("a")
    at.text_area(key="comment").input("Left one is clearer")
    submit = at.button[-1]
    submit.click().run()
    assert at.success and "saved" in at.success[0].value
    assert any("Reveal" in m.value for m in at.markdown)
    at.button[-1].click().run()  # submitting twice stores it once
    with session_scope(app_env.resolved_database_url) as session:
        assert session.scalar(select(func.count()).select_from(Vote)) == 1
        vote = session.scalar(select(Vote))
        assert vote.comment == "Left one is clearer"
        answers = session.scalars(select(Answer).where(Answer.turn_id == vote.turn_id)).all()
        assert {a.arm for a in answers} == {"off", "on"}
        decision = session.scalar(select(HandoffDecision).where(HandoffDecision.turn_id == vote.turn_id))
        assert decision.policy == "confidence" and "p10_logprob" in decision.signals


def test_empty_and_overlong_prompts_are_refused(app_env: Settings, event_code: str) -> None:
    at = _joined(event_code)
    at.chat_input(key="prompt").set_value("   ").run()
    assert "empty" in at.error[0].value
    at.chat_input(key="prompt").set_value("x" * 8001).run()
    assert "limit is 8,000" in at.error[0].value
    with session_scope(app_env.resolved_database_url) as session:
        assert session.scalar(select(func.count()).select_from(Answer)) == 0
