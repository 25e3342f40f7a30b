"""Votes and ratings: every accepted vote is stored exactly once, in pane and in arm terms.

A submission carries an idempotency key, and a second submission for the same conversation round
(double click, rerun, second tab) updates that one row until the next prompt (or the reveal) makes
it final. ``save_vote`` retries a briefly unavailable database; when it still fails, the caller
keeps the submission and sends it again later.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import rollups
from db.models import Event, Rating, Turn, Vote, utcnow
from db.session import in_transaction
from db.vocabulary import BOTH, PANES, WINNERS, rating_arm, winner_arm
from feedback.errors import FeedbackRejected, VoteIsFinal, check_text

DEFAULT_LIKE_TAGS = ("accurate", "helpful", "well_written", "concise")
DEFAULT_DISLIKE_TAGS = ("wrong_facts", "ignored_instructions", "too_verbose", "refused_wrongly", "unsafe", "slow")

IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # a uuid4 hex from the page; fits the column


@dataclass
class PaneRating:
    stars: int | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class VoteSubmission:
    """A vote as the page submits it, in pane terms (a = left, b = right).

    ``turn_id`` names the round voted on; when given, a vote on any other round is refused as final.
    """

    idempotency_key: str
    conversation_id: int
    winner: str
    comment: str | None = None
    ratings: dict[str, PaneRating] = field(default_factory=dict)  # pane a / b, or "both"
    turn_id: int | None = None
    display: str | None = None  # "live" or "fair" (latency-fair): how the panes streamed for this vote


def event_tags(event: Event) -> tuple[list[str], list[str]]:
    """The like and dislike reason tags of an event: the organizer's lists, else the defaults."""
    return list(event.like_tags or DEFAULT_LIKE_TAGS), list(event.dislike_tags or DEFAULT_DISLIKE_TAGS)


def validate_comment(comment: str | None, max_chars: int) -> str | None:
    if comment is None or not comment.strip():
        return None
    if len(comment) > max_chars:
        raise FeedbackRejected("comment_too_long", length=len(comment), max_chars=max_chars)
    if "\x00" in comment:  # PostgreSQL can't store it, and the person can remove it
        raise FeedbackRejected("nul_character")
    return check_text(comment)


def finalize_votes(session: Session, conversation_id: int) -> None:
    """Votes of a conversation can no longer change: a new prompt was sent or the arms were revealed."""
    session.execute(update(Vote).where(Vote.conversation_id == conversation_id).values(final=True))


def _set_ratings(vote: Vote, ratings: dict[str, PaneRating], handoff_side: str) -> None:
    """Update ratings in place per arm (the (vote, arm) pair is unique)."""
    wanted = {rating_arm(pane, handoff_side): r for pane, r in ratings.items() if r.stars is not None or r.tags}
    existing = {rating.arm: rating for rating in vote.ratings}
    for arm, rating in existing.items():
        if arm not in wanted:
            vote.ratings.remove(rating)
    for arm, r in wanted.items():
        row = existing.get(arm) or Rating(arm=arm)
        row.stars, row.tags = r.stars, list(r.tags) or None
        if arm not in existing:
            vote.ratings.append(row)


def _validate_submission(submission: VoteSubmission, allowed_tags: Collection[str] | None) -> None:
    if not isinstance(submission.idempotency_key, str) or not IDEMPOTENCY_KEY.fullmatch(submission.idempotency_key):
        raise FeedbackRejected("bad_key")  # the page makes them; anything else was tampered with
    if submission.winner not in WINNERS:
        raise FeedbackRejected("bad_winner", choices=", ".join(WINNERS))
    panes = (BOTH,) if submission.winner == "identical" else PANES
    for pane, rating in submission.ratings.items():
        if pane not in panes:
            raise FeedbackRejected("bad_winner", choices=", ".join(WINNERS))
        if rating.stars is not None and not 1 <= rating.stars <= 5:
            raise FeedbackRejected("bad_stars")
        unknown = [tag for tag in rating.tags if allowed_tags is not None and tag not in allowed_tags]
        if unknown:
            raise FeedbackRejected("unknown_tag", tag=unknown[0])


def _time_to_vote_ms(turn: Turn) -> float | None:
    """Milliseconds from the turn's answers being stored (both complete) to this first save."""
    done = turn.created_at
    if done is None:
        return None
    if done.tzinfo is None:  # SQLite hands back naive UTC datetimes
        done = done.replace(tzinfo=dt.UTC)
    return max(0.0, (utcnow() - done).total_seconds() * 1000)


def submit_vote(
    session: Session,
    submission: VoteSubmission,
    max_comment_chars: int = 2000,
    *,
    allowed_tags: Collection[str] | None = None,
) -> Vote:
    """Insert the vote for the conversation's latest turn, or update it while it is not final.

    Call with a session of its own: on a lost insert race it rolls back and retries as an update.
    """
    _validate_submission(submission, allowed_tags)
    comment = validate_comment(submission.comment, max_comment_chars)
    # The conversation's lock first (db.rollups.lock_conversation), held to COMMIT: a moderator's hide or
    # another tab's edit of this conversation waits for this vote (or this vote for them), so the
    # overview's rollups move by exactly what changed. One statement on PostgreSQL (the row, locked);
    # on SQLite the write lock (BEGIN IMMEDIATE, queued behind this process's other writers), so the
    # reads below are current and no later statement waits on another writer.
    conversation = rollups.lock_conversation(session, submission.conversation_id)
    if conversation is None:
        raise FeedbackRejected("no_conversation")
    turn = session.scalar(
        select(Turn).where(Turn.conversation_id == conversation.id).order_by(Turn.index.desc()).limit(1)
    )
    if turn is None:
        raise FeedbackRejected("no_turn")
    if submission.turn_id is not None and submission.turn_id != turn.id:
        raise VoteIsFinal()
    vote = session.scalar(
        select(Vote)
        .where(
            (Vote.idempotency_key == submission.idempotency_key)
            | ((Vote.conversation_id == conversation.id) & (Vote.turn_id == turn.id))
        )
        .execution_options(populate_existing=True)
    )
    before = rollups.Delta() if vote is None else rollups.vote_delta(vote, conversation)
    if vote is None:
        vote = Vote(
            idempotency_key=submission.idempotency_key,
            event_id=conversation.event_id,
            conversation_id=conversation.id,
            turn_id=turn.id,
            participant_id=conversation.participant_id,
            time_to_vote_ms=_time_to_vote_ms(turn),
            display=submission.display,
        )
        session.add(vote)
    elif vote.final or vote.turn_id != turn.id:
        raise VoteIsFinal()
    vote.winner = submission.winner
    vote.winner_arm = winner_arm(submission.winner, conversation.handoff_side)
    vote.comment = comment
    vote.updated_at = utcnow()
    _set_ratings(vote, submission.ratings, conversation.handoff_side)
    try:
        session.flush()
    except IntegrityError:
        # A concurrent submission for the same round won the insert: retry as an update of it.
        session.rollback()
        return submit_vote(session, submission, max_comment_chars, allowed_tags=allowed_tags)
    rollups.apply(session, rollups.vote_delta(vote, conversation).minus(before))  # last: row locks held briefly
    return vote


def save_vote(
    url: str,
    submission: VoteSubmission,
    *,
    max_comment_chars: int = 2000,
    allowed_tags: Collection[str] | None = None,
    attempts: int = 3,
) -> int:
    """Store a vote in its own transaction, retrying a briefly unavailable database; returns its id.

    Safe to call again with the same submission (the idempotency key makes it one row), which is
    what a page does with feedback it kept after ``DatabaseUnavailable``.
    """
    return in_transaction(
        url,
        lambda session: submit_vote(session, submission, max_comment_chars, allowed_tags=allowed_tags).id,
        attempts=attempts,
    )
