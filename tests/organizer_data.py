"""Small, exactly known organizer data written through the real capture functions (not raw inserts)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import update

from db.models import Event, Vote
from db.session import session_scope
from db.vocabulary import pane_of, winner_pane
from feedback.capture import join_event, record_turn, start_conversation
from feedback.votes import PaneRating, VoteSubmission, submit_vote
from tests.factories import turn_record


@dataclass
class Round:
    """One conversation of one turn with a vote; ``winner_arm`` in arm terms."""

    winner_arm: str
    handed_off: bool = False
    latency_off: float = 100.0
    latency_on: float = 100.0
    cost: Decimal | None = None
    error_kind: str | None = None
    blocked_by: str | None = None
    language: str | None = "en"
    comment: str | None = None
    tags_on: list[str] = field(default_factory=list)
    stars_on: int | None = None
    at: dt.datetime | None = None
    energy_off: float | None = None  # Wh
    energy_on: float | None = None


def add_rounds(url: str, event_id: int, rounds: list[Round], prompt: str = "What is a handoff?") -> list[int]:
    """Write each round as a participant's conversation with one vote; returns the vote ids."""
    vote_ids = []
    for r in rounds:
        with session_scope(url) as session:
            participant = join_event(session, session.get(Event, event_id))
            conversation = start_conversation(session, participant)
            record = turn_record(
                prompt,
                handed_off=r.handed_off,
                score=0.9 if r.handed_off else 0.1,
                signals={},
                blocked_by=r.blocked_by,
                language=r.language,
                latency_off=r.latency_off,
                latency_on=r.latency_on,
                cost=r.cost,
                error_kind=r.error_kind,
                energy_off=r.energy_off,
                energy_on=r.energy_on,
            )
            record_turn(session, conversation.id, record)
            side = conversation.handoff_side
            conversation_id = conversation.id
        winner = winner_pane(r.winner_arm, side)
        ratings = (
            {pane_of("on", side): PaneRating(stars=r.stars_on, tags=r.tags_on)} if (r.tags_on or r.stars_on) else {}
        )
        with session_scope(url) as session:
            vote = submit_vote(session, VoteSubmission(uuid.uuid4().hex, conversation_id, winner, r.comment, ratings))
            vote_ids.append(vote.id)
            if r.at is not None:
                session.execute(update(Vote).where(Vote.id == vote.id).values(created_at=r.at))
    return vote_ids
