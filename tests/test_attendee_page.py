"""The attendee page through Streamlit's AppTest, with the real model and the real stand-in.

The event's threshold picks the case: 0 always hands off (the panes differ), above 1 never does
(the panes are identical and one quality rating replaces the pairwise vote).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db.models import Answer, Conversation, HandoffDecision, Participant, Rating, Turn, Vote
from db.session import session_scope
from playground.settings import Settings, get_settings
from playground.untrusted import inert
from tests.conftest import ROOT, _postgres_database, feedback_key
from tests.db_outage import database_unavailable
from tests.factories import make_event

pytestmark = pytest.mark.slow
PAGE = str(ROOT / "playground" / "views" / "attendee.py")
TIMEOUT = 240
ALWAYS, NEVER = 0.0, 1.01
# The stand-in answers greedily; open prompts and a warmer local model keep the panes from matching by chance.
OPEN_PROMPTS = ("Invent a new fruit and describe its taste in one sentence.", "Now write a two-line poem about it.")


@pytest.fixture
def warm(monkeypatch: pytest.MonkeyPatch, app_env: Settings) -> Settings:
    monkeypatch.setenv("HANDOFF_TEMPERATURE", "1.0")
    get_settings.cache_clear()
    return get_settings()


def add_event(settings: Settings, code: str = "SF-2026", threshold: float = ALWAYS, **fields: object) -> str:
    make_event(
        settings.resolved_database_url,
        code,
        "sf",
        name="SF Dev Day",
        city="San Francisco",
        timezone="America/Los_Angeles",
        handoff_threshold=threshold,
        **fields,
    )
    return code


def count(settings: Settings, model: type) -> int:
    with session_scope(settings.resolved_database_url) as session:
        return session.scalar(select(func.count()).select_from(model))


def opened(code: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["event"] = code
    return at.run()


def joined(code: str) -> AppTest:
    at = opened(code)
    at.button(key="consent_accept").click().run()
    assert not at.exception
    return at


def ask(at: AppTest, prompt: str) -> AppTest:
    at.chat_input(key="prompt").set_value(prompt).run()
    assert not at.exception, at.exception
    return at


def comparing(settings: Settings, prompt: str, threshold: float = NEVER) -> AppTest:
    """A participant who joined a fresh event and sent a first prompt."""
    return ask(joined(add_event(settings, threshold=threshold)), prompt)


def texts(at: AppTest, kind: str = "markdown") -> list[str]:
    return [element.value for element in getattr(at, kind)]


def test_unknown_event_code_gets_a_clear_message(app_env: Settings) -> None:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    at.text_input(key="event_code").input("NOPE-1")
    at.button(key="join").click().run()
    assert f"No event with code '{inert('NOPE-1')}'" in at.error[0].value
    assert not at.chat_input


def test_a_tampered_event_link_is_echoed_as_plain_text(app_env: Settings) -> None:
    code = "![x](https://tracker.example/p.png?leak=1) # [Sign in here](https://phish.example)"
    at = opened(code)
    (shown,) = [e.value for e in at.error]
    assert inert(code) in shown
    assert "](" not in shown and "![" not in shown and "# [" not in shown


@pytest.fixture
def unmigrated_url(app_env: Settings, tmp_path: Path) -> Iterator[str]:
    """A second, empty database of the same kind as the page's."""
    if app_env.resolved_database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        yield from _postgres_database()


def test_unmigrated_database_is_refused(
    app_env: Settings, monkeypatch: pytest.MonkeyPatch, unmigrated_url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", unmigrated_url)
    get_settings.cache_clear()
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert "handoff db upgrade" in at.error[0].value


def test_typed_code_joins_the_event_and_shows_where_it_is(app_env: Settings) -> None:
    add_event(app_env)
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    at.text_input(key="event_code").input(" sf-2026 ")
    at.button(key="join").click().run()
    assert "SF Dev Day · San Francisco · San Francisco Bay Area" in texts(at, "caption")
    assert at.button(key="consent_accept") and not at.chat_input
    assert count(app_env, Participant) == 0  # nothing stored before consent


def test_declining_consent_stores_nothing_but_lets_people_look_around(app_env: Settings) -> None:
    code = add_event(app_env)
    at = opened(code)
    assert any("What is stored" in m for m in texts(at))
    at.button(key="consent_decline").click().run()
    assert "nothing of yours is stored" in at.warning[0].value
    assert at.chat_input(key="prompt").disabled
    at.pills(key="category").set_value("math").run()
    assert any("derivative" in m for m in texts(at))
    assert count(app_env, Participant) == 0
    at.button(key="consent_review").click().run()
    at.button(key="consent_accept").click().run()
    assert count(app_env, Participant) == 1
    assert not at.chat_input(key="prompt").disabled


def test_organizer_consent_text_replaces_the_default(app_env: Settings) -> None:
    code = add_event(app_env, consent_text="Stored **forever** by ACME <b>Research</b>.")
    at = opened(code)
    assert "Stored **forever** by ACME <b>Research</b>." in texts(at)  # markdown, HTML stays escaped


def test_profile_is_optional_and_stored_only_when_given(app_env: Settings) -> None:
    code = add_event(app_env, ask_profile=True)
    at = joined(code)
    at.selectbox(key="profile_role").set_value("developer")
    at.selectbox(key="profile_language").set_value("ja")
    at.button(key="profile_save").click().run()
    assert "profile_role" not in [box.key for box in at.selectbox]  # asked once, then out of the way
    skipper = joined(code)
    skipper.button(key="profile_skip").click().run()
    with session_scope(app_env.resolved_database_url) as session:
        profiles = sorted(session.scalars(select(Participant.profile)), key=str)
    assert profiles == [None, {"role": "developer", "language": "ja"}]


def test_multi_turn_vote_with_stars_tags_and_comment_then_reveal(app_env: Settings, warm: Settings) -> None:
    at = comparing(app_env, OPEN_PROMPTS[0], threshold=ALWAYS)
    ask(at, OPEN_PROMPTS[1])
    assert len(at.chat_message) == 8  # two prompts and two answers in each pane
    assert "Turn 2 of 10" in texts(at, "caption")
    at.segmented_control(key=feedback_key(at, "winner")).set_value("b")
    at.feedback(key=feedback_key(at, "stars_a")).set_value(1)  # st.feedback counts from 0: two stars
    at.feedback(key=feedback_key(at, "stars_b")).set_value(4)
    at.pills(key=feedback_key(at, "tags_a")).set_value(["too_verbose", "wrong_facts"])
    at.pills(key=feedback_key(at, "tags_b")).set_value(["accurate"])
    at.text_area(key=feedback_key(at, "comment")).input("B 👍 <b>not bold</b> '; DROP TABLE votes; --")
    at.button(key="save_feedback").click().run()
    assert "Saved" in at.success[0].value
    at.button(key="save_feedback").click().run()  # a second click stores it once
    at.button(key="reveal").click().run()
    assert any("had **handoff on**" in m for m in texts(at))
    assert any("Turn 2" in m and "handed off to the cloud model" in m for m in texts(at))
    assert at.chat_input(key="prompt").disabled
    with session_scope(app_env.resolved_database_url) as session:
        vote = session.scalar(select(Vote))
        conversation = session.get(Conversation, vote.conversation_id)
        turns = session.scalars(select(Turn).order_by(Turn.index)).all()
        assert [t.prompt for t in turns] == list(OPEN_PROMPTS)
        assert vote.turn_id == turns[1].id and vote.final and vote.winner == "b"
        assert vote.winner_arm == ("on" if conversation.handoff_side == "b" else "off")
        assert vote.comment == "B 👍 <b>not bold</b> '; DROP TABLE votes; --"
        by_pane = {("a" if (r.arm == "on") == (conversation.handoff_side == "a") else "b"): r for r in vote.ratings}
        assert (by_pane["a"].stars, by_pane["a"].tags) == (2, ["too_verbose", "wrong_facts"])
        assert (by_pane["b"].stars, by_pane["b"].tags) == (5, ["accurate"])
        decisions = session.scalars(select(HandoffDecision)).all()
        assert [d.handed_off for d in decisions] == [True, True]
    assert count(app_env, Vote) == 1


def test_identical_answers_ask_for_one_rating_stored_as_identical(app_env: Settings) -> None:
    at = comparing(app_env, "Say hello.", threshold=NEVER)
    assert "identical" in at.info[0].value
    assert not at.segmented_control
    at.button(key="save_feedback").click().run()
    assert "star" in at.warning[0].value  # one quality rating is asked for
    at.feedback(key=feedback_key(at, "stars_both")).set_value(2)
    at.pills(key=feedback_key(at, "tags_both")).set_value(["concise"])
    at.button(key="save_feedback").click().run()
    with session_scope(app_env.resolved_database_url) as session:
        vote = session.scalar(select(Vote))
        assert (vote.winner, vote.winner_arm) == ("identical", "identical")
        assert [(r.arm, r.stars, r.tags) for r in vote.ratings] == [("both", 3, ["concise"])]
        answers = session.scalars(select(Answer)).all()
        assert answers[0].text == answers[1].text


def test_feedback_is_editable_until_the_next_prompt_then_final(app_env: Settings, warm: Settings) -> None:
    at = comparing(app_env, OPEN_PROMPTS[0], threshold=ALWAYS)
    at.button(key="save_feedback").click().run()
    assert "Pick which answer is better" in at.warning[0].value
    at.segmented_control(key=feedback_key(at, "winner")).set_value("a")
    at.button(key="save_feedback").click().run()
    at.segmented_control(key=feedback_key(at, "winner")).set_value("tie")
    at.text_area(key=feedback_key(at, "comment")).input("changed my mind")
    at.button(key="save_feedback").click().run()
    assert "Update feedback" == at.button(key="save_feedback").label
    with session_scope(app_env.resolved_database_url) as session:
        vote = session.scalar(select(Vote))
        assert (vote.winner, vote.comment, vote.final) == ("tie", "changed my mind", False)
    ask(at, OPEN_PROMPTS[1])
    assert at.segmented_control(key=feedback_key(at, "winner")).value is None  # a fresh form for the new round
    assert at.button(key="save_feedback").label == "Save feedback"
    with session_scope(app_env.resolved_database_url) as session:
        assert session.scalar(select(Vote.final))
    assert count(app_env, Vote) == 1


def test_new_comparison_starts_over_with_a_fresh_conversation(app_env: Settings) -> None:
    at = comparing(app_env, "Hi!", threshold=NEVER)
    at.button(key="new_comparison").click().run()
    assert not at.chat_message
    ask(at, "Hello again")
    with session_scope(app_env.resolved_database_url) as session:
        conversations = session.scalars(select(Conversation)).all()
        assert len(conversations) == 2
        assert {len(c.turns) for c in conversations} == {1}


def test_sample_task_is_sent_with_its_category_and_language(app_env: Settings) -> None:
    code = add_event(app_env, threshold=NEVER)
    at = joined(code)
    at.pills(key="category").set_value("math").run()
    at.button(key="sample_0").click().run()
    assert not at.exception
    ask(at, "日本の首都はどこですか?")
    with session_scope(app_env.resolved_database_url) as session:
        turns = session.scalars(select(Turn).order_by(Turn.index)).all()
        assert turns[0].prompt == "What is the derivative of x^3 * sin(x)?"
        assert (turns[0].category, turns[0].language) == ("math", "en")
        assert turns[1].language == "ja"
        assert session.scalar(select(Conversation.category)) == "math"


def test_empty_and_overlong_prompts_are_refused(app_env: Settings) -> None:
    code = add_event(app_env)
    at = joined(code)
    ask(at, "   ")
    assert "empty" in at.error[0].value
    ask(at, "x" * 8001)
    assert "limit is 8,000" in at.error[0].value
    assert count(app_env, Turn) == 0


def test_a_prompt_within_the_character_limit_but_over_the_context_is_refused_in_tokens(app_env: Settings) -> None:
    at = joined(add_event(app_env))
    ask(at, "🎉" * 8000)  # 8,000 characters: inside the character limit, ~3 tokens each
    (message,) = [e.value for e in at.error]
    room = 8192 - app_env.max_new_tokens
    assert f"it reads at most {room:,} before answering" in message
    assert int(message.split(" tokens")[0].rsplit(" ", 1)[1].replace(",", "")) > 16_000
    assert count(app_env, Turn) == 0 and not at.chat_input(key="prompt").disabled


def test_turn_limit_and_rate_limit_get_clear_messages(app_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOFF_MAX_TURNS", "2")
    monkeypatch.setenv("HANDOFF_MAX_PROMPTS_PER_MINUTE", "3")
    get_settings.cache_clear()
    at = comparing(app_env, "One", threshold=NEVER)
    ask(at, "Two")
    assert "reached its 2 turns" in at.info[0].value
    assert at.chat_input(key="prompt").disabled
    at.button(key="new_comparison").click().run()
    ask(at, "Three")
    ask(at, "Four")
    assert "limit is 3 a minute" in at.error[0].value
    assert count(app_env, Turn) == 3


def test_overlong_comment_is_refused_and_nothing_is_stored(app_env: Settings) -> None:
    at = comparing(app_env, "Hi", threshold=NEVER)
    at.feedback(key=feedback_key(at, "stars_both")).set_value(3)
    at.text_area(key=feedback_key(at, "comment")).input("x" * 2001)
    at.button(key="save_feedback").click().run()
    assert "limit is 2,000" in at.error[0].value
    assert count(app_env, Vote) == 0


def test_event_language_and_attendee_switch(app_env: Settings) -> None:
    code = add_event(app_env, ui_language="ja")
    at = opened(code)
    assert at.button(key="consent_accept").label == "同意してはじめる"
    at.selectbox(key="ui_language").set_value("fr").run()
    assert at.button(key="consent_accept").label == "J'accepte, on commence"
    at.button(key="consent_accept").click().run()
    at.selectbox(key="ui_language").set_value("en").run()
    assert at.button(key="new_comparison").label == "New comparison"
    with session_scope(app_env.resolved_database_url) as session:
        assert session.scalar(select(Participant.ui_language)) == "en"
    assert count(app_env, Rating) == 0


def test_feedback_is_kept_while_the_database_is_down_and_saved_once_it_is_back(app_env: Settings) -> None:
    at = comparing(app_env, "Hi there", threshold=NEVER)
    at.feedback(key=feedback_key(at, "stars_both")).set_value(4)
    at.text_area(key=feedback_key(at, "comment")).input("kept through the outage")
    url = app_env.resolved_database_url
    with database_unavailable(url):
        at.button(key="save_feedback").click().run()
        assert "Not saved yet" in at.warning[0].value
        assert at.button(key="retry_feedback")
        at.button(key="retry_feedback").click().run()  # still down: still kept, still said so
        assert "Not saved yet" in at.warning[0].value
    at.button(key="retry_feedback").click().run()
    assert "Saved" in at.success[0].value
    at.run()  # another rerun must not store it again
    with session_scope(url) as session:
        vote = session.scalar(select(Vote))
        assert (vote.winner, vote.comment, [r.stars for r in vote.ratings]) == (
            "identical",
            "kept through the outage",
            [5],
        )
    assert count(app_env, Vote) == 1


def test_kept_feedback_is_saved_before_the_next_prompt_closes_the_round(app_env: Settings) -> None:
    at = comparing(app_env, "Hi there", threshold=NEVER)
    at.feedback(key=feedback_key(at, "stars_both")).set_value(0)
    with database_unavailable(app_env.resolved_database_url):
        at.button(key="save_feedback").click().run()
    ask(at, "Next question")
    with session_scope(app_env.resolved_database_url) as session:
        vote = session.scalar(select(Vote))
        assert vote.final and [r.stars for r in vote.ratings] == [1]
    assert count(app_env, Turn) == 2


def test_spent_budget_says_handoff_is_paused_and_answers_stay_local(app_env: Settings) -> None:
    from decimal import Decimal

    code = add_event(app_env, "BROKE-1", cloud_budget=Decimal("0.01"), cloud_spent=Decimal("0.01"))
    at = joined(code)
    assert "Handoff is paused" in at.warning[0].value
    ask(at, "What is the capital of Spain?")
    with session_scope(app_env.resolved_database_url) as session:
        decision = session.scalar(select(HandoffDecision))
        assert decision.handed_off and decision.blocked_by == "budget"
        assert {a.source for a in session.scalars(select(Answer))} == {"local"}
    funded = add_event(app_env, "FUNDED-1", cloud_budget=Decimal("100"))
    assert not opened(funded).warning
