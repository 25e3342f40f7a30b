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
            vote_id = submit_vote(
                session, VoteSubmission(uuid.uuid4().hex, conversation_id, winner, r.comment, ratings)
            )
            vote_ids.append(vote_id)
            if r.at is not None:
                session.execute(update(Vote).where(Vote.id == vote_id).values(created_at=r.at))
    return vote_ids


def assert_rollups_match_rows(url: str) -> None:
    """The overview from the rollups equals the overview from the rows, for every scope and bucket.

    Energy sums are floats added in another order (per write, not in one SUM): equal to 1e-9 relative."""
    import dataclasses

    import pytest
    from sqlalchemy import select

    from db.analytics import BUCKETS, Scope, overview_from_rollups, overview_from_rows
    from db.models import REGIONS

    with session_scope(url) as session:
        event_ids = list(session.scalars(select(Event.id).order_by(Event.id)))
        scopes = [Scope(), *(Scope(region=r) for r in REGIONS), *(Scope(event_ids=(e,)) for e in event_ids)]
        if len(event_ids) > 1:
            scopes.append(Scope(event_ids=tuple(event_ids[:2])))
        for scope in scopes:
            for bucket in BUCKETS:
                rolled = dataclasses.asdict(overview_from_rollups(session, scope, bucket))
                rows = dataclasses.asdict(overview_from_rows(session, scope, bucket))
                energy_rolled, energy_rows = rolled.pop("energy"), rows.pop("energy")
                assert rolled == rows, (scope, bucket)
                assert energy_rolled["prompts"] == energy_rows["prompts"]
                for name in ("local_wh", "handoff_wh", "handoff_cost"):
                    assert float(energy_rolled[name]) == pytest.approx(float(energy_rows[name]), rel=1e-9, abs=1e-12)
