"""Started turns, counted in the database every replica shares: the prompt rate and the per-event cap.

A turn takes a slot when it starts and gives it back when it ends, so a turn stopped in both panes
still counted against the prompt rate, and two tabs or two replicas cannot slip past either limit:
the check and the insert are one statement (SQLite runs it under its write lock; PostgreSQL first
locks the event's row, which serializes the acquisitions of one event).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy import delete, func, literal, select, update
from sqlalchemy.orm import Session

from db.models import Event, TurnSlot, utcnow

RATE_WINDOW = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class SlotRefused:
    """Why no slot was given: ``rate`` (too many prompts this minute) or ``busy`` (the event is full)."""

    reason: str
    limit: int
    wait_s: int = 0
    running: int = 0


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value  # SQLite hands back naive UTC


def take_slot(
    session: Session,
    event_id: int,
    participant_id: int,
    *,
    per_minute: int,
    max_running: int,
    ttl: dt.timedelta,
    now: dt.datetime | None = None,
) -> int | SlotRefused:
    """A new slot's id, or why the turn may not start. ``max_running`` 0 means no per-event cap."""
    now = now or utcnow()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Event.id).where(Event.id == event_id).with_for_update())
    running = (
        select(func.count())
        .select_from(TurnSlot)
        .where(TurnSlot.event_id == event_id, TurnSlot.finished_at.is_(None), TurnSlot.expires_at > now)
        .scalar_subquery()
    )
    recent = (
        select(func.count())
        .select_from(TurnSlot)
        .where(TurnSlot.participant_id == participant_id, TurnSlot.started_at > now - RATE_WINDOW)
        .scalar_subquery()
    )
    conditions = [recent < per_minute]
    if max_running > 0:
        conditions.append(running < max_running)
    columns = ("event_id", "participant_id", "started_at", "expires_at")
    values = select(literal(event_id), literal(participant_id), literal(now), literal(now + ttl)).where(*conditions)
    inserted = session.execute(
        TurnSlot.__table__.insert().from_select(columns, values).returning(TurnSlot.id)
    ).scalar_one_or_none()
    if inserted is not None:
        return inserted
    starts = list(
        session.scalars(
            select(TurnSlot.started_at)
            .where(TurnSlot.participant_id == participant_id, TurnSlot.started_at > now - RATE_WINDOW)
            .order_by(TurnSlot.started_at)
        )
    )
    if len(starts) >= per_minute:
        oldest = _aware(starts[-per_minute])
        return SlotRefused("rate", per_minute, max(1, math.ceil((oldest + RATE_WINDOW - now).total_seconds())))
    return SlotRefused("busy", max_running, running=session.scalar(select(running)) or 0)


def give_back_slot(session: Session, slot_id: int, *, counted: bool = True) -> None:
    """The turn ended (answered, stopped, failed): the event has room for another one.

    ``counted=False`` when the turn never started (refused by another check): it then does not
    count against the prompt rate either.
    """
    if counted:
        session.execute(update(TurnSlot).where(TurnSlot.id == slot_id).values(finished_at=utcnow()))
    else:
        session.execute(delete(TurnSlot).where(TurnSlot.id == slot_id))
