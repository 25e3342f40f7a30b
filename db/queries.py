"""Queries shared by the CLI, the pages and the feedback services."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Event


class UnknownEvent(LookupError):
    """No event has this code."""

    def __init__(self, code: str) -> None:
        super().__init__(f"No event with code {code!r}. Check the code on your badge or the event screen.")
        self.code = code


def normalize_code(code: str) -> str:
    return code.strip().upper()


def event_by_code(session: Session, code: str) -> Event:
    if "\x00" in code or len(code) > 200:  # no event has such a code (and PostgreSQL refuses NUL): unknown
        raise UnknownEvent(code)
    event = session.scalar(select(Event).where(Event.code == normalize_code(code)))
    if event is None:
        raise UnknownEvent(code)
    return event


def list_events(session: Session) -> list[Event]:
    return list(session.scalars(select(Event).order_by(Event.starts_on, Event.code)))


def wall_event(session: Session, code: str) -> Event | None:
    """The event whose public results wall is on, or None (unknown code and a wall turned off look alike)."""
    return session.scalar(select(Event).where(Event.code == normalize_code(code), Event.wall_enabled.is_(True)))
