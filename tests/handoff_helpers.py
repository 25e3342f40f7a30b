"""Shared set-up for the handoff tests: an event, a participant, a comparison, one stored turn."""

from __future__ import annotations

import random
from decimal import Decimal

from db.models import Event
from db.session import session_scope
from feedback.capture import join_event, record_turn, start_conversation
from playground.comparison import Comparison, Delta, Finished, Note, Status, TurnEvent
from playground.engine.cloud import CloudClient
from playground.handoff.base import Policy
from playground.handoff.budget import EventBudget, ParticipantRateLimit
from playground.runtime import local_engine
from playground.settings import Settings
from tests.factories import make_event


def fast(settings: Settings, **overrides: object) -> Settings:
    """Short answers and quick, bounded retries: tests stay short on two CPU cores."""
    values = {
        "max_new_tokens": 16,
        "cloud_backoff_s": 0.01,
        "cloud_backoff_max_s": 0.05,
        "shadow_rate": 0.0,
        "cloud_timeout_s": 120.0,  # a stand-in on a busy machine is slow, not failing
    }
    return settings.model_copy(update={**values, **overrides})


def event_with_participant(url: str, budget: Decimal | None = None, code: str = "HANDOFF-1") -> tuple[int, int]:
    """(event id, participant id) in a fresh event."""
    event_id = make_event(url, code, "sf", cloud_budget=budget)
    with session_scope(url) as session:
        return event_id, join_event(session, session.get(Event, event_id)).id


def comparison(
    settings: Settings,
    policy: Policy,
    threshold: float,
    url: str | None = None,
    event_id: int | None = None,
    rate_limit: str | None = None,
    **options: object,
) -> Comparison:
    return Comparison(
        local_engine(settings),
        CloudClient(settings),
        policy,
        threshold,
        settings,
        budget=EventBudget(url, event_id) if url and event_id is not None else None,
        rate_limit=ParticipantRateLimit(rate_limit, scope=f"test-{random.random()}") if rate_limit else None,
        rng=random.Random(0),
        **options,
    )


def run_turn(
    comparison: Comparison, prompt: str, participant_id: int | None = None
) -> tuple[list[TurnEvent], Finished]:
    events = list(comparison.run(prompt, [], [], participant_id=participant_id))
    finished = events[-1]
    assert isinstance(finished, Finished)
    return events, finished


def texts(events: list[TurnEvent]) -> dict[str, str]:
    out = {"off": "", "on": ""}
    for event in events:
        if isinstance(event, Delta):
            out[event.arm] += event.text
    return out


def notes(events: list[TurnEvent]) -> list[Note]:
    return [e.note for e in events if isinstance(e, Status)]


def store(url: str, participant_id: int, finished: Finished) -> int:
    """Record the turn in a new conversation, as the page does; returns the turn id."""
    with session_scope(url) as session:
        from db.models import Participant

        conversation = start_conversation(session, session.get(Participant, participant_id))
        return record_turn(session, conversation.id, finished.record).id
