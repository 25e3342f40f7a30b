"""Small, exactly known organizer data written through the real capture functions (not raw inserts)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import update

from db.models import Event, Vote
from db.session import session_scope
from feedback.capture import join_event, record_turn, start_conversation
from feedback.records import AnswerRecord, DecisionRecord, TurnRecord
from feedback.votes import PaneRating, VoteSubmission, submit_vote


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


def add_event(url: str, code: str, region: str, budget: str | None = None) -> int:
    with session_scope(url) as session:
        event = Event(
            code=code,
            name=f"{code} day",
            region=region,
            city="City",
            timezone="UTC",
            cloud_budget=Decimal(budget) if budget else None,
        )
        session.add(event)
        session.flush()
        return event.id


def _record(r: Round, prompt: str) -> TurnRecord:
    on_source = "cloud" if r.handed_off and r.blocked_by is None else "local"
    return TurnRecord(
        prompt=prompt,
        language=r.language,
        decision=DecisionRecord(
            policy="confidence",
            policy_version="1",
            stage="post",
            threshold=0.5,
            score=0.9 if r.handed_off else 0.1,
            handed_off=r.handed_off,
            latency_ms=1.0,
            signals={},
            blocked_by=r.blocked_by,
        ),
        answers=[
            AnswerRecord(arm="off", source="local", text="local answer", model="smol", latency_ms=r.latency_off),
            AnswerRecord(
                arm="on",
                source=on_source,
                text="cloud answer" if on_source == "cloud" else "local answer",
                model="big" if on_source == "cloud" else "smol",
                latency_ms=r.latency_on,
                cost=r.cost,
                error_kind=r.error_kind,
            ),
        ],
    )


def add_rounds(url: str, event_id: int, rounds: list[Round], prompt: str = "What is a handoff?") -> list[int]:
    """Write each round as a participant's conversation with one vote; returns the vote ids."""
    vote_ids = []
    for r in rounds:
        with session_scope(url) as session:
            participant = join_event(session, session.get(Event, event_id))
            conversation = start_conversation(session, participant)
            record_turn(session, conversation.id, _record(r, prompt))
            side = conversation.handoff_side
            conversation_id = conversation.id
        other = "b" if side == "a" else "a"
        winner = {"on": side, "off": other}.get(r.winner_arm, r.winner_arm)
        ratings = {side: PaneRating(stars=r.stars_on, tags=r.tags_on)} if (r.tags_on or r.stars_on) else {}
        with session_scope(url) as session:
            vote = submit_vote(session, VoteSubmission(uuid.uuid4().hex, conversation_id, winner, r.comment, ratings))
            vote_ids.append(vote.id)
            if r.at is not None:
                session.execute(update(Vote).where(Vote.id == vote.id).values(created_at=r.at))
    return vote_ids
