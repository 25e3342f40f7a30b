"""Feedback capture rules, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import Answer, Event, HandoffDecision, Participant, Rating, Turn, Vote
from db.session import DatabaseUnavailable, in_transaction, session_scope
from db.vocabulary import winner_arm
from feedback.capture import (
    check_prompt_allowed,
    join_event,
    record_turn,
    save_profile,
    start_conversation,
    validate_profile,
    validate_prompt,
)
from feedback.errors import FeedbackRejected, RateLimited, TurnLimitReached, VoteIsFinal
from feedback.language import detect_language
from feedback.votes import (
    DEFAULT_DISLIKE_TAGS,
    DEFAULT_LIKE_TAGS,
    PaneRating,
    VoteSubmission,
    finalize_votes,
    save_vote,
    submit_vote,
)
from playground.i18n import Translator
from tests.db_outage import database_unavailable
from tests.factories import make_event, turn_record

english = Translator("en")


@pytest.fixture
def conversation_id(db_url: str) -> int:
    event_id = make_event(db_url, "T-1", "europe")
    with session_scope(db_url) as session:
        conversation = start_conversation(session, join_event(session, session.get(Event, event_id)))
        record_turn(session, conversation.id, turn_record(signals={"min_logprob": -3.2}, reason="low confidence"))
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
        record_turn(session, conversation_id, turn_record("And 3+3?"))
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
    with pytest.raises(FeedbackRejected) as refused:
        validate_prompt(prompt, 8000)
    assert message in english.error(refused.value)


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


def test_tags_outside_the_event_list_are_refused(db_url: str, conversation_id: int) -> None:
    with pytest.raises(FeedbackRejected) as refused, session_scope(db_url) as session:
        submit_vote(
            session,
            VoteSubmission("k", conversation_id, "a", None, {"a": PaneRating(3, ["sparkly"])}),
            allowed_tags=DEFAULT_LIKE_TAGS + DEFAULT_DISLIKE_TAGS,
        )
    assert "'sparkly' is not a tag" in english.error(refused.value)
    assert _count(db_url, Vote) == 0


def test_identical_answers_get_one_rating_for_both(db_url: str, conversation_id: int) -> None:
    with session_scope(db_url) as session:
        submit_vote(
            session, VoteSubmission("k", conversation_id, "identical", None, {"both": PaneRating(4, ["concise"])})
        )
    with session_scope(db_url) as session:
        vote = session.scalar(select(Vote))
        assert (vote.winner_arm, [(r.arm, r.stars, r.tags) for r in vote.ratings]) == (
            "identical",
            [("both", 4, ["concise"])],
        )
    with pytest.raises(FeedbackRejected), session_scope(db_url) as session:
        submit_vote(session, VoteSubmission("k2", conversation_id, "identical", None, {"a": PaneRating(4)}))


def test_vote_for_an_earlier_round_is_final(db_url: str, conversation_id: int) -> None:
    with session_scope(db_url) as session:
        first = session.scalar(select(Turn.id))
        record_turn(session, conversation_id, turn_record("And 3+3?"))
    with pytest.raises(VoteIsFinal), session_scope(db_url) as session:
        submit_vote(session, VoteSubmission("k", conversation_id, "a", turn_id=first))
    assert _count(db_url, Vote) == 0


def test_reveal_makes_the_feedback_final(db_url: str, conversation_id: int) -> None:
    with session_scope(db_url) as session:
        submit_vote(session, VoteSubmission("k", conversation_id, "b"))
        finalize_votes(session, conversation_id)
    with pytest.raises(VoteIsFinal), session_scope(db_url) as session:
        submit_vote(session, VoteSubmission("k", conversation_id, "a"))


def test_profile_keeps_only_known_choices_and_is_never_required(db_url: str, conversation_id: int) -> None:
    assert validate_profile({"role": "student", "experience": None, "language": ""}) == {"role": "student"}
    with pytest.raises(FeedbackRejected) as refused:
        validate_profile({"role": "CEO"})
    assert "'CEO' is not one of the choices for role" in english.error(refused.value)
    with pytest.raises(FeedbackRejected):
        validate_profile({"email": "a@b.c"})
    with session_scope(db_url) as session:
        participant_id = session.scalar(select(Participant.id))
        save_profile(session, participant_id, {"experience": "builder"})
    with session_scope(db_url) as session:
        assert session.get(Participant, participant_id).profile == {"experience": "builder"}


def test_turn_limit_counts_the_conversations_turns(db_url: str, conversation_id: int) -> None:
    with session_scope(db_url) as session:
        check_prompt_allowed(session, conversation_id, max_turns=2)
        with pytest.raises(TurnLimitReached, match="max_turns=1"):
            check_prompt_allowed(session, conversation_id, max_turns=1)


def test_messages_exist_in_every_interface_language() -> None:
    error = RateLimited(6, 12)
    assert "6 a minute" in english.error(error) and "12 seconds" in english.error(error)
    assert "1分あたり6件" in Translator("ja").error(error)
    assert "6 par minute" in Translator("fr").error(error)


def test_feedback_kept_while_the_database_is_down_is_saved_exactly_once(db_url: str, conversation_id: int) -> None:
    submission = VoteSubmission("kept-1", conversation_id, "a", "saved later", {"a": PaneRating(5)})
    with database_unavailable(db_url), pytest.raises(DatabaseUnavailable, match="unavailable"):
        save_vote(db_url, submission, attempts=2)
    assert _count(db_url, Vote) == 0
    for _ in range(2):  # the page retries; a second retry (another rerun) must not add a row
        save_vote(db_url, submission)
    assert _count(db_url, Vote) == 1
    with session_scope(db_url) as session:
        assert session.scalar(select(Vote.comment)) == "saved later"


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Quelle est la capitale du Japon ?", "fr"),
        ("日本の首都はどこですか?", "ja"),
        ("Pourquoi ce code plante ? ```python\nimport os\nfor file in os.listdir(): print(file)\n```", "fr"),
        ("Explique ce lien https://example.com/a-long-english-path-about-things s'il te plaît", "fr"),
        ("🎉 2+2", None),
    ],
)
def test_prompt_language_ignores_code_and_links(text: str, language: str | None) -> None:
    assert detect_language(text) == language


def test_a_turn_stored_again_after_a_lost_commit_acknowledgement_is_stored_once(
    db_url: str, conversation_id: int
) -> None:
    """The retry of ``in_transaction`` repeats the work when the commit landed but its answer was lost."""
    record = turn_record("Is this stored twice?")
    attempts = []

    def store(session) -> int:  # noqa: ANN001
        turn = record_turn(session, conversation_id, record)
        attempts.append(turn.id)
        return turn.id

    first = in_transaction(db_url, store)
    again = in_transaction(db_url, store)  # what the retry after a lost acknowledgement runs
    assert first == again and attempts == [first, first]
    with session_scope(db_url) as session:
        prompts = session.scalars(select(Turn.prompt).where(Turn.conversation_id == conversation_id)).all()
    assert prompts.count("Is this stored twice?") == 1
