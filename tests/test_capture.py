"""Feedback capture rules, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import Answer, Event, HandoffDecision, Rating, Vote
from db.session import session_scope
from feedback.capture import (
    FeedbackRejected,
    PaneRating,
    VoteIsFinal,
    VoteSubmission,
    join_event,
    record_turn,
    start_conversation,
    submit_vote,
    validate_prompt,
    winner_arm,
)
from feedback.records import AnswerRecord, DecisionRecord, TurnRecord


def _turn(prompt: str = "What is 2+2?", handed_off: bool = True) -> TurnRecord:
    return TurnRecord(
        prompt=prompt,
        language="en",
        decision=DecisionRecord(
            policy="confidence", policy_version="1", stage="post", threshold=0.5, score=0.7,
            handed_off=handed_off, latency_ms=0.2, signals={"min_logprob": -3.2}, reason="low confidence",
        ),
        answers=[
            AnswerRecord(arm="off", source="local", text="5", model="SmolLM2-135M-Instruct"),
            AnswerRecord(arm="on", source="cloud" if handed_off else "local", text="4", model="cloud"),
        ],
    )  # fmt: skip


@pytest.fixture
def conversation_id(db_url: str) -> int:
    with session_scope(db_url) as session:
        event = Event(code="T-1", name="Test", region="europe", city="Paris", timezone="Europe/Paris")
        session.add(event)
        session.flush()
        conversation = start_conversation(session, join_event(session, event))
        record_turn(session, conversation.id, _turn())
        return conversation.id


def _count(db_url: str, model: type) -> int:
    with session_scope(db_url) as session:
        return session.scalar(select(func.count()).select_from(model))


def test_turn_is_stored_with_both_answers_and_the_decision(db_url: str, conversation_id: int) -> None:
    assert _count(db_url, Answer) == 2
    with session_scope(db_url) as session:
        decision = session.scalar(select(HandoffDecision))
        assert decision.handed_off and decision.signals == {"min_logprob": -3.2}


def test_vote_is_stored_once_when_submitted_twice(db_url: str, conversation_id: int) -> None:
    submission = VoteSubmission("key-1", conversation_id, "a", "first", {"a": PaneRating(4, ["accurate"])})
    for _ in range(2):
        with session_scope(db_url) as session:
            submit_vote(session, submission)
    assert _count(db_url, Vote) == 1
    assert _count(db_url, Rating) == 1


def test_second_tab_updates_the_same_round_instead_of_adding_a_vote(db_url: str, conversation_id: int) -> None:
    with session_scope(db_url) as session:
        submit_vote(session, VoteSubmission("tab-1", conversation_id, "a", None, {"a": PaneRating(5)}))
    with session_scope(db_url) as session:
        submit_vote(session, VoteSubmission("tab-2", conversation_id, "tie", "changed my mind", {"b": PaneRating(2)}))
    with session_scope(db_url) as session:
        vote = session.scalar(select(Vote))
        assert (vote.winner, vote.comment) == ("tie", "changed my mind")
        assert [(r.stars) for r in vote.ratings] == [2]
    assert _count(db_url, Vote) == 1


def test_vote_becomes_final_at_the_next_prompt(db_url: str, conversation_id: int) -> None:
    with session_scope(db_url) as session:
        submit_vote(session, VoteSubmission("k", conversation_id, "b"))
        record_turn(session, conversation_id, _turn("And 3+3?"))
    with pytest.raises(VoteIsFinal), session_scope(db_url) as session:
        submit_vote(session, VoteSubmission("k", conversation_id, "a"))
    with session_scope(db_url) as session:
        assert session.scalar(select(Vote.final))


def test_winner_is_translated_to_arms_with_the_randomized_side() -> None:
    assert winner_arm("a", handoff_side="a") == "on"
    assert winner_arm("a", handoff_side="b") == "off"
    assert winner_arm("both_bad", handoff_side="a") == "both_bad"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("", "empty"), ("   \n", "empty"), ("x" * 8001, "limit is 8,000")],
)
def test_bad_prompts_get_a_clear_message(prompt: str, message: str) -> None:
    with pytest.raises(FeedbackRejected, match=message):
        validate_prompt(prompt, 8000)


def test_bad_votes_are_rejected_and_nothing_is_stored(db_url: str, conversation_id: int) -> None:
    for bad in (
        VoteSubmission("k1", conversation_id, "left"),
        VoteSubmission("k2", conversation_id, "a", "x" * 2001),
        VoteSubmission("k3", conversation_id, "a", None, {"a": PaneRating(6)}),
    ):
        with pytest.raises(FeedbackRejected), session_scope(db_url) as session:
            submit_vote(session, bad)
    assert _count(db_url, Vote) == 0


def test_text_is_stored_verbatim(db_url: str, conversation_id: int) -> None:
    comment = "<script>alert(1)</script> '; DROP TABLE votes; -- مرحبا 🎉 日本語"
    with session_scope(db_url) as session:
        submit_vote(session, VoteSubmission("k", conversation_id, "tie", comment))
    with session_scope(db_url) as session:
        assert session.scalar(select(Vote.comment)) == comment
