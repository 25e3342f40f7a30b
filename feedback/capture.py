"""Capture of participants, turns and votes, with the rules that keep feedback research-grade.

Every accepted vote is stored exactly once: a submission carries an idempotency key, and a second
submission for the same conversation round (double click, rerun, second tab) updates that one row
until the next prompt (or the reveal) makes it final. Writes that meet a briefly unavailable
database are retried; when they still fail, the caller keeps the submission and tries again later.
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

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
from db.session import session_scope
from feedback.records import TurnRecord
from feedback.style import reveals_origin, style_features
from playground.i18n import translate

PANES = ("a", "b")
VOTE_CHOICES = ("a", "b", "tie", "both_bad", "identical")
PAIRWISE_CHOICES = ("a", "b", "tie", "both_bad")
DEFAULT_LIKE_TAGS = ("accurate", "helpful", "well_written", "concise")
DEFAULT_DISLIKE_TAGS = ("wrong_facts", "ignored_instructions", "too_verbose", "refused_wrongly", "unsafe", "slow")
# The optional self-description an organizer may switch on; every field may be left out.
PROFILE_CHOICES: dict[str, tuple[str, ...]] = {
    "role": ("developer", "researcher", "data", "student", "product", "other"),
    "experience": ("none", "tried", "regular", "builder"),
    "language": ("en", "ja", "fr", "zh", "ko", "es", "de", "other"),
}
RATE_WINDOW = dt.timedelta(minutes=1)
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)

T = TypeVar("T")


class FeedbackRejected(ValueError):
    """Input a person can fix; ``key`` and ``params`` name the message in every interface language."""

    def __init__(self, key: str, **params: Any) -> None:
        self.key, self.params = f"errors.{key}", params
        super().__init__(translate("en", self.key, **params))

    def message(self, language: str) -> str:
        return translate(language, self.key, **self.params)


class VoteIsFinal(FeedbackRejected):
    def __init__(self) -> None:
        super().__init__("vote_final")


class TurnLimitReached(FeedbackRejected):
    def __init__(self, max_turns: int) -> None:
        super().__init__("turn_limit", max_turns=max_turns)


class RateLimited(FeedbackRejected):
    def __init__(self, limit: int, wait_s: int) -> None:
        super().__init__("rate_limited", limit=limit, wait=wait_s)
        self.wait_s = wait_s


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached after retries; nothing was written, the caller keeps the data."""

    key = "errors.database_unavailable"

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{translate('en', self.key)} ({type(cause).__name__})")

    def message(self, language: str) -> str:
        return translate(language, self.key)


def in_transaction(url: str, work: Callable[[Session], T], *, attempts: int = 3, backoff_s: float = 0.2) -> T:
    """Run ``work`` in its own transaction, retrying while the database is unreachable.

    ``work`` must be safe to repeat (idempotent), since a commit may succeed even when its
    acknowledgement is lost; raises ``DatabaseUnavailable`` once every attempt failed.
    """
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s, max=2.0),
        retry=retry_if_exception_type(UNAVAILABLE),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt, session_scope(url) as session:
                result = work(session)
        return result
    except UNAVAILABLE as error:
        raise DatabaseUnavailable(error) from error


def validate_prompt(prompt: str, max_chars: int) -> str:
    if not prompt or not prompt.strip():
        raise FeedbackRejected("empty_prompt")
    if len(prompt) > max_chars:
        raise FeedbackRejected("prompt_too_long", length=len(prompt), max_chars=max_chars)
    return prompt


def validate_comment(comment: str | None, max_chars: int) -> str | None:
    if comment is None or not comment.strip():
        return None
    if len(comment) > max_chars:
        raise FeedbackRejected("comment_too_long", length=len(comment), max_chars=max_chars)
    return comment


def check_prompt_allowed(
    session: Session,
    participant_id: int,
    conversation_id: int | None,
    *,
    max_turns: int,
    per_minute: int,
    now: dt.datetime | None = None,
) -> None:
    """Refuse a prompt past the conversation's turn limit or the participant's rate limit.

    Counted in the database, so two tabs of one participant share the same limits.
    """
    if conversation_id is not None:
        turns = session.scalar(select(func.count()).select_from(Turn).where(Turn.conversation_id == conversation_id))
        if turns >= max_turns:
            raise TurnLimitReached(max_turns)
    now = now or utcnow()
    recent = list(
        session.scalars(
            select(Turn.created_at)
            .join(Conversation, Turn.conversation_id == Conversation.id)
            .where(Conversation.participant_id == participant_id, Turn.created_at > now - RATE_WINDOW)
            .order_by(Turn.created_at)
        )
    )
    if len(recent) >= per_minute:
        oldest = recent[-per_minute]
        if oldest.tzinfo is None:  # SQLite hands back naive UTC datetimes
            oldest = oldest.replace(tzinfo=dt.UTC)
        raise RateLimited(per_minute, max(1, math.ceil((oldest + RATE_WINDOW - now).total_seconds())))


def validate_profile(profile: dict[str, str | None]) -> dict[str, str]:
    """Keep only the fields given; unknown fields or values are refused (nothing free-text is asked)."""
    clean: dict[str, str] = {}
    for name, value in profile.items():
        if value in (None, ""):
            continue
        if name not in PROFILE_CHOICES or value not in PROFILE_CHOICES[name]:
            raise FeedbackRejected("bad_profile", value=value, field=name)
        clean[name] = value
    return clean


def join_event(
    session: Session, event: Event, *, ui_language: str | None = None, profile: dict | None = None
) -> Participant:
    """Create a pseudonymous participant; call only once consent was given."""
    participant = Participant(
        event_id=event.id,
        pseudonym=secrets.token_urlsafe(16),
        consented_at=utcnow(),
        ui_language=ui_language,
        profile=validate_profile(profile) if profile else None,
    )
    session.add(participant)
    session.flush()
    return participant


def save_profile(session: Session, participant_id: int, profile: dict[str, str | None]) -> dict[str, str]:
    """Store the optional self-description; an empty one stores nothing."""
    clean = validate_profile(profile)
    participant = session.get(Participant, participant_id)
    assert participant is not None
    participant.profile = clean or None
    return clean


def set_ui_language(session: Session, participant_id: int, language: str) -> None:
    """Remember the interface language the participant switched to (for analysis by language)."""
    session.execute(update(Participant).where(Participant.id == participant_id).values(ui_language=language))


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
    finalize_votes(session, conversation_id)
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
    turn.answers = [
        Answer(
            **vars(answer),
            style=style_features(answer.text, answer.tokens_out),
            reveals_origin=reveals_origin(answer.text),
        )
        for answer in record.answers
    ]
    session.add(turn)
    session.flush()
    return turn


def finalize_votes(session: Session, conversation_id: int) -> None:
    """Votes of a conversation can no longer change: a new prompt was sent or the arms were revealed."""
    session.execute(update(Vote).where(Vote.conversation_id == conversation_id).values(final=True))


def event_tags(event: Event) -> tuple[list[str], list[str]]:
    """The like and dislike reason tags of an event: the organizer's lists, else the defaults."""
    return list(event.like_tags or DEFAULT_LIKE_TAGS), list(event.dislike_tags or DEFAULT_DISLIKE_TAGS)


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


def winner_arm(winner: str, handoff_side: str) -> str:
    """Translate a pane verdict into arm terms (on = handoff arm)."""
    if winner in PANES:
        return "on" if winner == handoff_side else "off"
    return winner


def _rating_arm(pane: str, handoff_side: str) -> str:
    return "both" if pane == "both" else ("on" if pane == handoff_side else "off")


def _set_ratings(vote: Vote, ratings: dict[str, PaneRating], handoff_side: str) -> None:
    """Update ratings in place per arm (the (vote, arm) pair is unique)."""
    wanted = {_rating_arm(pane, handoff_side): r for pane, r in ratings.items() if r.stars is not None or r.tags}
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
    if submission.winner not in VOTE_CHOICES:
        raise FeedbackRejected("bad_winner", choices=", ".join(VOTE_CHOICES))
    panes = ("both",) if submission.winner == "identical" else PANES
    for pane, rating in submission.ratings.items():
        if pane not in panes:
            raise FeedbackRejected("bad_winner", choices=", ".join(VOTE_CHOICES))
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
    conversation = session.get(Conversation, submission.conversation_id)
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
