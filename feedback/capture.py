"""Capture of participants, turns and votes, with the rules that keep feedback research-grade.

Every accepted vote is stored exactly once: a submission carries an idempotency key, and a second
submission for the same conversation round (double click, rerun, second tab) updates that one row
until the next prompt makes it final.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import (
    Answer,
    Conversation,
    Event,
    HandoffDecision,
    Participant,
    Rating,
    Turn,
    Vote,
    utcnow,
)
from feedback.records import TurnRecord

PANES = ("a", "b")
VOTE_CHOICES = ("a", "b", "tie", "both_bad", "identical")


class FeedbackRejected(ValueError):
    """Input a person can fix; the message says how."""


class VoteIsFinal(FeedbackRejected):
    def __init__(self) -> None:
        super().__init__("This vote is final: a new prompt was sent after it. Vote on the new answers instead.")


def validate_prompt(prompt: str, max_chars: int) -> str:
    if not prompt or not prompt.strip():
        raise FeedbackRejected("Type a prompt first: an empty message can't be compared.")
    if len(prompt) > max_chars:
        raise FeedbackRejected(
            f"Your prompt is {len(prompt):,} characters; the limit is {max_chars:,}. Shorten it and send again."
        )
    return prompt


def validate_comment(comment: str | None, max_chars: int) -> str | None:
    if comment is None or not comment.strip():
        return None
    if len(comment) > max_chars:
        raise FeedbackRejected(
            f"Your comment is {len(comment):,} characters; the limit is {max_chars:,}. Shorten it and submit again."
        )
    return comment


def join_event(
    session: Session, event: Event, *, ui_language: str | None = None, profile: dict | None = None
) -> Participant:
    """Create a pseudonymous participant; call only once consent was given."""
    participant = Participant(
        event_id=event.id,
        pseudonym=secrets.token_urlsafe(16),
        consented_at=utcnow(),
        ui_language=ui_language,
        profile=profile or None,
    )
    session.add(participant)
    session.flush()
    return participant


def start_conversation(session: Session, participant: Participant, category: str | None = None) -> Conversation:
    """A new blind comparison with the handoff arm on a random side."""
    conversation = Conversation(
        event_id=participant.event_id,
        participant_id=participant.id,
        handoff_side=secrets.choice(PANES),
        category=category,
    )
    session.add(conversation)
    session.flush()
    return conversation


def record_turn(session: Session, conversation_id: int, record: TurnRecord) -> Turn:
    """Store a prompt with its answers and handoff decision; earlier votes become final."""
    index = session.scalar(
        select(Turn.index).where(Turn.conversation_id == conversation_id).order_by(Turn.index.desc()).limit(1)
    )
    session.execute(update(Vote).where(Vote.conversation_id == conversation_id).values(final=True))
    turn = Turn(
        conversation_id=conversation_id,
        index=0 if index is None else index + 1,
        prompt=record.prompt,
        language=record.language,
        category=record.category,
    )
    decision = record.decision
    turn.decision = HandoffDecision(
        policy=decision.policy,
        policy_version=decision.policy_version,
        stage=decision.stage,
        threshold=decision.threshold,
        score=decision.score,
        handed_off=decision.handed_off,
        reason=decision.reason,
        blocked_by=decision.blocked_by,
        latency_ms=decision.latency_ms,
        signals=decision.signals,
        shadow_propensity=decision.shadow_propensity,
    )
    turn.answers = [Answer(**vars(answer)) for answer in record.answers]
    session.add(turn)
    session.flush()
    return turn


@dataclass
class PaneRating:
    stars: int | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class VoteSubmission:
    """A vote as the page submits it, in pane terms (a = left, b = right)."""

    idempotency_key: str
    conversation_id: int
    winner: str
    comment: str | None = None
    ratings: dict[str, PaneRating] = field(default_factory=dict)  # pane a / b, or "both"


def winner_arm(winner: str, handoff_side: str) -> str:
    """Translate a pane verdict into arm terms (on = handoff arm)."""
    if winner in PANES:
        return "on" if winner == handoff_side else "off"
    return winner


def _rating_arm(pane: str, handoff_side: str) -> str:
    return "both" if pane == "both" else ("on" if pane == handoff_side else "off")


def _set_ratings(vote: Vote, ratings: dict[str, PaneRating], handoff_side: str) -> None:
    """Update ratings in place per arm (the (vote, arm) pair is unique)."""
    wanted = {
        _rating_arm(pane, handoff_side): r for pane, r in ratings.items() if r.stars is not None or r.tags
    }
    existing = {rating.arm: rating for rating in vote.ratings}
    for arm, rating in existing.items():
        if arm not in wanted:
            vote.ratings.remove(rating)
    for arm, r in wanted.items():
        row = existing.get(arm) or Rating(arm=arm)
        row.stars, row.tags = r.stars, list(r.tags) or None
        if arm not in existing:
            vote.ratings.append(row)


def submit_vote(session: Session, submission: VoteSubmission, max_comment_chars: int = 2000) -> Vote:
    """Insert the vote for the conversation's latest turn, or update it while it is not final.

    Call with a session of its own: on a lost insert race it rolls back and retries as an update.
    """
    if submission.winner not in VOTE_CHOICES:
        raise FeedbackRejected(f"Pick one of: {', '.join(VOTE_CHOICES)}.")
    for rating in submission.ratings.values():
        if rating.stars is not None and not 1 <= rating.stars <= 5:
            raise FeedbackRejected("Stars go from 1 to 5.")
    comment = validate_comment(submission.comment, max_comment_chars)
    conversation = session.get(Conversation, submission.conversation_id)
    if conversation is None:
        raise FeedbackRejected("This comparison no longer exists; start a new one.")
    turn = session.scalar(
        select(Turn).where(Turn.conversation_id == conversation.id).order_by(Turn.index.desc()).limit(1)
    )
    if turn is None:
        raise FeedbackRejected("Send a prompt before voting.")
    vote = session.scalar(
        select(Vote).where(
            (Vote.idempotency_key == submission.idempotency_key)
            | ((Vote.conversation_id == conversation.id) & (Vote.turn_id == turn.id))
        )
    )
    if vote is None:
        vote = Vote(
            idempotency_key=submission.idempotency_key,
            event_id=conversation.event_id,
            conversation_id=conversation.id,
            turn_id=turn.id,
            participant_id=conversation.participant_id,
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
        return submit_vote(session, submission, max_comment_chars)
    return vote


