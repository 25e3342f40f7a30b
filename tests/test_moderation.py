"""Moderation on real SQLite and PostgreSQL: the comment feed, hiding and unhiding, who and when."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.analytics import Scope, overview
from db.models import Conversation, Vote
from db.session import session_scope
from feedback.moderation import (
    CommentFilter,
    ModerationRefused,
    comment_feed,
    hidden_counts,
    hide_comment,
    hide_conversation,
    unhide_comment,
    unhide_conversation,
    used_tags,
)
from tests.factories import make_event
from tests.organizer_data import Round, add_rounds


@pytest.fixture
def votes(db_url: str) -> dict[str, int]:
    sf = make_event(db_url, "SF-1", "sf")
    eu = make_event(db_url, "EU-1", "europe")
    first, second, silent = add_rounds(
        db_url,
        sf,
        [
            Round("on", comment="cloud one was precise", tags_on=["accurate"], stars_on=5),
            Round("off", comment="spam spam spam", tags_on=["too long", "rude"], stars_on=1),
            Round("tie"),
        ],
    )
    (paris,) = add_rounds(db_url, eu, [Round("both_bad", comment="both missed the point")])
    return {"first": first, "second": second, "silent": silent, "paris": paris, "sf": sf, "eu": eu}


def _feed(url: str, **filters) -> list[str]:
    with session_scope(url) as session:
        return [c.comment for c in comment_feed(session, CommentFilter(**filters))]


def test_feed_is_newest_first_and_filters_in_sql(db_url: str, votes: dict[str, int]) -> None:
    assert _feed(db_url) == ["both missed the point", "spam spam spam", "cloud one was precise"]
    assert _feed(db_url, event_ids=(votes["sf"],)) == ["spam spam spam", "cloud one was precise"]
    assert _feed(db_url, region="europe") == ["both missed the point"]
    assert _feed(db_url, tag="rude") == ["spam spam spam"]
    assert _feed(db_url, winner_arm="on") == ["cloud one was precise"]
    assert _feed(db_url, stars=5) == ["cloud one was precise"]
    assert _feed(db_url, tag="accurate", stars=1) == []
    with session_scope(db_url) as session:
        assert used_tags(session) == ["accurate", "rude", "too long"]
        assert used_tags(session, (votes["eu"],)) == []
        (comment,) = comment_feed(session, CommentFilter(tag="accurate"))
    assert comment.stars == {"on": 5} and comment.tags == {"on": ["accurate"]} and comment.prompt
    assert comment.event_code == "SF-1" and not comment.hidden


def test_hidden_comment_stays_in_the_database_with_who_and_when(db_url: str, votes: dict[str, int]) -> None:
    with session_scope(db_url) as session:
        before = overview(session, Scope(event_ids=(votes["sf"],)))
        hide_comment(session, votes["second"], by="mia")
    with session_scope(db_url) as session:
        vote = session.get(Vote, votes["second"])
        assert vote.hidden_by == "mia" and vote.hidden_at is not None and vote.comment == "spam spam spam"
        after = overview(session, Scope(event_ids=(votes["sf"],)))
        hidden_feed = comment_feed(session, CommentFilter(include_hidden=True))
        assert hidden_counts(session) == (1, 0)
    assert _feed(db_url) == ["both missed the point", "cloud one was precise"]
    assert [c.hidden_by for c in hidden_feed] == [None, "mia", None]
    assert before.votes - after.votes == 1 and after.verdicts.get("off", 0) == before.verdicts["off"] - 1
    assert ("on", "rude", 1) not in after.top_tags
    with session_scope(db_url) as session:
        hide_comment(session, votes["second"], by="zoe")  # hiding again keeps the first moderator
        assert session.get(Vote, votes["second"]).hidden_by == "mia"
        unhide_comment(session, votes["second"])
    assert "spam spam spam" in _feed(db_url)


def test_hidden_conversation_leaves_the_feed_and_the_numbers(db_url: str, votes: dict[str, int]) -> None:
    with session_scope(db_url) as session:
        conversation_id = session.get(Vote, votes["first"]).conversation_id
        hide_conversation(session, conversation_id, by="admin")
    with session_scope(db_url) as session:
        numbers = overview(session, Scope(event_ids=(votes["sf"],)))
        assert session.scalar(select(Conversation.hidden_by).where(Conversation.id == conversation_id)) == "admin"
        (shown,) = [c for c in comment_feed(session, CommentFilter(include_hidden=True)) if c.conversation_hidden]
    assert shown.vote_id == votes["first"] and shown.hidden_by == "admin"
    assert (numbers.conversations, numbers.votes, numbers.turns) == (2, 2, 2)
    assert "cloud one was precise" not in _feed(db_url)
    with session_scope(db_url) as session:
        unhide_conversation(session, conversation_id)
    assert "cloud one was precise" in _feed(db_url)


def test_organizer_cannot_moderate_another_event(db_url: str, votes: dict[str, int]) -> None:
    with session_scope(db_url) as session:
        with pytest.raises(ModerationRefused, match="events you moderate"):
            hide_comment(session, votes["paris"], by="mia", allowed_event_ids={votes["sf"]})
        with pytest.raises(ModerationRefused, match="No comment #999999"):
            hide_comment(session, 999999, by="mia")
        with pytest.raises(ModerationRefused, match="moderator's name"):
            hide_comment(session, votes["first"], by=" ")
        assert session.get(Vote, votes["paris"]).hidden_at is None
