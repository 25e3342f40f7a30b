"""Votes and ratings: every accepted vote is stored exactly once, in pane and in arm terms.

A submission carries an idempotency key, and a second submission for the same conversation round
(double click, rerun, second tab) updates that one row until the next prompt (or the reveal) makes
it final. ``save_vote`` retries a briefly unavailable database; when it still fails, the caller
keeps the submission and sends it again later.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import Connection, Insert, Select, bindparam, delete, func, insert, select, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from db import rollups
from db.models import Conversation, Event, Rating, Turn, Vote, new_uid, utcnow
from db.session import connection_of, in_core_transaction
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


def _time_to_vote_ms(answered_at: dt.datetime | None) -> float | None:
    """Milliseconds from the turn's answers being stored (both complete) to this first save."""
    if answered_at is None:
        return None
    if answered_at.tzinfo is None:  # SQLite hands back naive UTC datetimes
        answered_at = answered_at.replace(tzinfo=dt.UTC)
    return max(0.0, (utcnow() - answered_at).total_seconds() * 1000)


_conversations, _turns, _votes, _ratings = (model.__table__ for model in (Conversation, Turn, Vote, Rating))


def _round_query() -> Select:
    """The conversation, its latest turn, the vote this submission is about and that vote's ratings: one
    row per rating (at least one row). The vote is the key's own, else this round's (another tab's)."""
    c, t, v, r = _conversations, _turns, _votes, _ratings
    latest = select(func.max(t.c["index"])).where(t.c.conversation_id == c.c.id).correlate(c).scalar_subquery()
    keyed, same_round = _votes.alias("keyed"), _votes.alias("same_round")
    by_key = select(keyed.c.id).where(keyed.c.idempotency_key == bindparam("key")).scalar_subquery()
    by_round = (
        select(same_round.c.id)
        .where(same_round.c.conversation_id == c.c.id, same_round.c.turn_id == t.c.id)
        .correlate(c, t)
        .scalar_subquery()
    )
    return (
        select(
            c.c.event_id,
            c.c.participant_id,
            c.c.handoff_side,
            c.c.hidden_at.label("conversation_hidden_at"),
            t.c.id.label("turn_id"),
            t.c.created_at.label("answered_at"),
            v.c.id.label("vote_id"),
            v.c.turn_id.label("vote_turn_id"),
            v.c.final,
            v.c.hidden_at.label("vote_hidden_at"),
            v.c.created_at.label("vote_created_at"),
            v.c.winner_arm,
            r.c.arm,
            r.c.tags,
        )
        .select_from(
            c.outerjoin(t, (t.c.conversation_id == c.c.id) & (t.c["index"] == latest))
            .outerjoin(v, v.c.id == func.coalesce(by_key, by_round))
            .outerjoin(r, r.c.vote_id == v.c.id)
        )
        .where(c.c.id == bindparam("conversation_id"))
    )


_ROUND = _round_query()
_UPDATE_VOTE = update(_votes).where(_votes.c.id == bindparam("vote_id"))  # SET: the columns passed
_DELETE_RATINGS = delete(_ratings).where(
    _ratings.c.vote_id == bindparam("vote_id"), _ratings.c.arm.in_(bindparam("arms", expanding=True))
)


@functools.cache
def _insert_vote(dialect: str) -> Insert:
    """The vote's INSERT, or nothing when its key or round is already stored (see ``_store``)."""
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert_(_votes).on_conflict_do_nothing().returning(_votes.c.id)


@functools.cache
def _upsert_ratings(dialect: str) -> Insert:
    """Ratings per (vote, arm), updated in place when the arm is rated again (its uid stays)."""
    insert_ = (pg_insert if dialect == "postgresql" else sqlite_insert)(_ratings)
    return insert_.on_conflict_do_update(
        index_elements=["vote_id", "arm"], set_={"stars": insert_.excluded.stars, "tags": insert_.excluded.tags}
    )


_VOTE_COLUMNS = tuple(name for name in _votes.c.keys() if name not in ("id", "hidden_at", "hidden_by"))
_RATING_COLUMNS = tuple(name for name in _ratings.c.keys() if name not in ("id", "vote_id"))


@functools.cache
def _insert_rated_vote(ratings: int) -> Insert:
    """PostgreSQL: the vote's INSERT and its ``ratings`` ratings' in one statement (a data-modifying WITH):
    one round trip and one statement's client CPU fewer. No row back when the vote was not inserted."""
    vote = (
        pg_insert(_votes)
        .values({name: bindparam(name, type_=_votes.c[name].type) for name in _VOTE_COLUMNS})
        .on_conflict_do_nothing()
        .returning(_votes.c.id)
        .cte("vote")
    )
    rows = [
        select(vote.c.id, *(bindparam(f"{name}_{i}", type_=_ratings.c[name].type) for name in _RATING_COLUMNS))
        for i in range(ratings)
    ]
    return (
        insert(_ratings)
        .from_select(["vote_id", *_RATING_COLUMNS], union_all(*rows) if ratings > 1 else rows[0])
        .returning(_ratings.c.vote_id)
    )


def _insert(connection: Connection, vote: dict[str, object], ratings: list[dict[str, object]]) -> int | None:
    """A new vote and its ratings: its id, or None when its key or round is already stored (by a writer
    that did not wait for the conversation's lock). PostgreSQL: one statement."""
    if ratings and connection.dialect.name == "postgresql":
        values = {**vote, "final": False, "uid": new_uid()}  # bound values: the columns' defaults do not apply
        for i, rating in enumerate(ratings):
            values.update({f"{name}_{i}": value for name, value in {**rating, "uid": new_uid()}.items()})
        return connection.scalar(_insert_rated_vote(len(ratings)), values)
    vote_id = connection.scalar(_insert_vote(connection.dialect.name), vote)
    if vote_id is not None and ratings:
        _upsert(connection, vote_id, ratings)
    return vote_id


def _upsert(connection: Connection, vote_id: int, ratings: list[dict[str, object]]) -> None:
    """The vote's ratings, per (vote, arm): inserted, or updated in place."""
    rated = [{"vote_id": vote_id, **rating} for rating in ratings]
    connection.execute(_upsert_ratings(connection.dialect.name), rated[0] if len(rated) == 1 else rated)


def _store(
    connection: Connection, db: Session | Connection, submission: VoteSubmission, comment: str | None
) -> int | None:
    """One try at storing the vote: its id, or None when its INSERT met a row committed since the lookup.

    Statements go to ``connection``; the rollups to ``db`` (a Session sums them until its COMMIT)."""
    # The conversation's lock first (db.rollups.conversation_locked), held to COMMIT, in the statement that
    # reads the round: a moderator's hide or another tab's edit of this conversation waits for this vote (or
    # this vote for them), so the overview's rollups move by exactly what changed. PostgreSQL: the row's
    # FOR UPDATE; SQLite: the write lock (BEGIN IMMEDIATE, queued behind this process's other writers).
    query = rollups.conversation_locked(db, _ROUND)
    keys = {"conversation_id": submission.conversation_id, "key": submission.idempotency_key}
    rows = connection.execute(query, keys).all()
    if not rows:
        raise FeedbackRejected("no_conversation")
    round_ = rows[0]
    if round_.turn_id is None:
        raise FeedbackRejected("no_turn")
    if submission.turn_id is not None and submission.turn_id != round_.turn_id:
        raise VoteIsFinal()
    stored = round_.vote_id is not None
    if stored and (round_.final or round_.vote_turn_id != round_.turn_id):
        raise VoteIsFinal()
    side = round_.handoff_side
    verdict = {"winner": submission.winner, "winner_arm": winner_arm(submission.winner, side), "comment": comment}
    ratings = [
        {"arm": rating_arm(pane, side), "stars": r.stars, "tags": list(r.tags) or None}
        for pane, r in submission.ratings.items()
        if r.stars is not None or r.tags
    ]
    now = utcnow()
    if stored:
        vote_id, created_at = round_.vote_id, round_.vote_created_at
        connection.execute(_UPDATE_VOTE, {"vote_id": vote_id, "updated_at": now, **verdict})
        gone = {row.arm for row in rows if row.arm is not None} - {rating["arm"] for rating in ratings}
        if gone:
            connection.execute(_DELETE_RATINGS, {"vote_id": vote_id, "arms": sorted(gone)})
        if ratings:
            _upsert(connection, vote_id, ratings)
    else:
        created_at = now
        vote = {
            "idempotency_key": submission.idempotency_key,
            "event_id": round_.event_id,
            "conversation_id": submission.conversation_id,
            "turn_id": round_.turn_id,
            "participant_id": round_.participant_id,
            "time_to_vote_ms": _time_to_vote_ms(round_.answered_at),
            "display": submission.display,
            "created_at": now,
            "updated_at": now,
            **verdict,
        }
        vote_id = _insert(connection, vote, ratings)
        if vote_id is None:
            return None
    if rollups.vote_counts_now(round_.vote_hidden_at, round_.conversation_hidden_at):
        before = (
            rollups.verdict_delta(
                round_.event_id, created_at, round_.winner_arm, [(r.arm, r.tags) for r in rows if r.arm]
            )
            if stored
            else rollups.Delta()
        )
        after = rollups.verdict_delta(
            round_.event_id, created_at, verdict["winner_arm"], [(r["arm"], r["tags"]) for r in ratings]
        )
        rollups.apply(db, after.minus(before))  # last: the rollup rows' locks are held briefly
    return vote_id


def submit_vote(
    db: Session | Connection,
    submission: VoteSubmission,
    max_comment_chars: int = 2000,
    *,
    allowed_tags: Collection[str] | None = None,
) -> int:
    """Insert the vote for the conversation's latest turn, or update it while it is not final; its id.

    Core statements only (the lookups in the statement that takes the conversation's lock): the vote
    path runs at a hall's pace, and its client CPU is what 50 sessions queue for.
    """
    _validate_submission(submission, allowed_tags)
    comment = validate_comment(submission.comment, max_comment_chars)
    if isinstance(db, Session):
        db.flush()  # the session's own pending rows first (Core statements do not autoflush)
    connection = connection_of(db)
    for _ in range(2):  # a row that appeared since the lookup is read (and updated) on the second try
        vote_id = _store(connection, db, submission, comment)
        if vote_id is not None:
            return vote_id
    raise VoteIsFinal()


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
    return in_core_transaction(
        url,
        lambda connection: submit_vote(connection, submission, max_comment_chars, allowed_tags=allowed_tags),
        attempts=attempts,
    )
