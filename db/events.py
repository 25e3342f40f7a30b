"""Creating and editing events (CLI and the organizer Events page share these rules)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import REGIONS, Event
from db.queries import normalize_code

CODE_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9_-]{1,63}$")
MAX_BUDGET = Decimal("999999.99")  # the column holds Numeric(12, 6)
# Column lengths (PostgreSQL refuses longer text; SQLite would keep it) and what a person calls the field.
TEXT_FIELDS = {
    "name": ("Name", 200),
    "city": ("City", 100),
    "currency": ("Currency", 8),
    "consent_text": ("Consent text", None),
}


# Money and routing, and how attendees find the event: an organizer of the event may not change these.
ADMIN_ONLY_FIELDS = ("code", "region", "cloud_budget", "currency", "handoff_policy", "handoff_threshold")


class EventInvalid(ValueError):
    """Event settings a person can fix; the message names the field and what it takes."""


class EventForbidden(EventInvalid):
    """A change the editor's role does not allow; the message says who can make it."""


class Editor(Protocol):
    """Who creates or edits an event (``playground.auth.Identity`` is one): admins may change anything,
    an organizer only the non-money fields of their own event."""

    @property
    def is_admin(self) -> bool: ...

    @property
    def event_id(self) -> int | None: ...


@dataclass(frozen=True)
class Operator:
    """The person running the CLI with the database's credentials: acts as an admin."""

    is_admin: bool = True
    event_id: int | None = None


OPERATOR = Operator()


@dataclass
class EventSpec:
    """Everything an organizer sets on an event; ``None`` policy/threshold means the settings default."""

    code: str
    name: str
    region: str
    city: str
    timezone: str = "UTC"
    starts_on: dt.date | None = None
    ends_on: dt.date | None = None
    cloud_budget: Decimal | None = None
    currency: str = "USD"
    handoff_policy: str | None = None
    handoff_threshold: float | None = None
    like_tags: list[str] = field(default_factory=list)
    dislike_tags: list[str] = field(default_factory=list)
    consent_text: str | None = None
    ui_language: str = "en"
    latency_fair: bool = False  # both panes start and finish showing text together (timing hides the side)

    @classmethod
    def of(cls, event: Event) -> EventSpec:
        """The spec of a stored event, to prefill an edit form."""
        values = {f.name: getattr(event, f.name) for f in fields(cls)}
        values["like_tags"], values["dislike_tags"] = list(event.like_tags or []), list(event.dislike_tags or [])
        return cls(**values)


def timezones() -> list[str]:
    """IANA time zone names for a picker, sorted."""
    return sorted(available_timezones())


def parse_tags(text: str) -> list[str]:
    """Comma- or newline-separated tags, trimmed, without duplicates, in the order given."""
    tags: list[str] = []
    for tag in re.split(r"[,\n]", text):
        tag = tag.strip()
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate(spec: EventSpec, policies: tuple[str, ...] | None = None) -> EventSpec:
    """A normalized copy of the spec, or EventInvalid naming the first field to fix."""
    spec = EventSpec(**asdict(spec))
    texts = {"code": ("Code", spec.code), "timezone": ("Time zone", spec.timezone)}
    texts |= {name: (label, getattr(spec, name) or "") for name, (label, _) in TEXT_FIELDS.items()}
    texts |= {"tags": ("Tags", "".join(spec.like_tags + spec.dislike_tags))}
    for label, value in texts.values():
        if "\x00" in value:  # PostgreSQL can't store it; a person can remove it
            raise EventInvalid(f"{label}: remove the NUL character (\\0) from the text.")
    for name, (label, limit) in TEXT_FIELDS.items():
        if limit is not None and len((getattr(spec, name) or "").strip()) > limit:
            raise EventInvalid(f"{label}: at most {limit} characters.")
    for name, value in asdict(spec).items():  # undecodable bytes (invalid UTF-8) arrive as lone surrogates
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and not _valid_unicode(text) for text in texts):
            raise EventInvalid(f"{name.replace('_', ' ').capitalize()}: contains bytes that are not valid UTF-8 text.")
    spec.code = normalize_code(spec.code)
    if not CODE_PATTERN.match(spec.code):
        raise EventInvalid("Code: 2 to 64 letters, digits, '-' or '_', e.g. SF-2026.")
    spec.name, spec.city = spec.name.strip(), spec.city.strip()
    if not spec.name:
        raise EventInvalid("Name: give the event a name attendees recognise.")
    if not spec.city:
        raise EventInvalid("City: say where the event takes place.")
    if spec.region not in REGIONS:
        raise EventInvalid(f"Region: one of {', '.join(REGIONS)}.")
    try:
        ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise EventInvalid(f"Time zone: {spec.timezone!r} is not an IANA name like Europe/Paris.") from None
    if spec.starts_on and spec.ends_on and spec.ends_on < spec.starts_on:
        raise EventInvalid("Dates: the event can't end before it starts.")
    if spec.cloud_budget is not None and not (spec.cloud_budget.is_finite() and 0 <= spec.cloud_budget <= MAX_BUDGET):
        raise EventInvalid(f"Budget: a number from 0 to {MAX_BUDGET:,} (leave empty for no cloud budget limit).")
    if spec.cloud_budget is not None:
        spec.cloud_budget = spec.cloud_budget.quantize(Decimal("0.000001"))
    if spec.handoff_threshold is not None and not 0.0 <= spec.handoff_threshold <= 1.0:
        raise EventInvalid("Threshold: a handoff score between 0 and 1.")
    if spec.handoff_policy is not None and policies is not None and spec.handoff_policy not in policies:
        raise EventInvalid(f"Policy: one of {', '.join(policies)}.")
    spec.consent_text = (spec.consent_text or "").strip() or None
    return spec


def _apply(event: Event, spec: EventSpec) -> None:
    for name, value in asdict(spec).items():
        setattr(event, name, value)
    event.like_tags, event.dislike_tags = spec.like_tags or None, spec.dislike_tags or None


def create_event(
    session: Session, spec: EventSpec, policies: tuple[str, ...] | None = None, *, editor: Editor
) -> Event:
    """Add an event attendees can join by its code (admins only); the code must be free."""
    if not editor.is_admin:
        raise EventForbidden("Only an admin can create events.")
    spec = validate(spec, policies)
    if session.scalar(select(Event.id).where(Event.code == spec.code)) is not None:
        raise EventInvalid(f"Code: an event with code {spec.code} exists already; pick another code.")
    event = Event()
    _apply(event, spec)
    session.add(event)
    session.flush()
    return event


def update_event(
    session: Session, event_id: int, spec: EventSpec, policies: tuple[str, ...] | None = None, *, editor: Editor
) -> Event:
    """Change an event's settings; a new code must be free (attendee links with the old code stop working).
    An organizer may edit only their own event, and not its ``ADMIN_ONLY_FIELDS``."""
    if not editor.is_admin and editor.event_id != event_id:
        raise EventForbidden("You can only edit your own event.")
    spec = validate(spec, policies)
    event = session.get(Event, event_id, with_for_update=True)
    if event is None:
        raise EventInvalid("This event no longer exists; reload the page.")
    if not editor.is_admin:
        changed = [name for name in ADMIN_ONLY_FIELDS if getattr(spec, name) != getattr(event, name)]
        if changed:
            raise EventForbidden(f"Only an admin can change {', '.join(changed)}; ask an admin.")
    taken = session.scalar(select(Event.id).where(Event.code == spec.code, Event.id != event_id))
    if taken is not None:
        raise EventInvalid(f"Code: an event with code {spec.code} exists already; pick another code.")
    _apply(event, spec)
    session.flush()
    return event


def set_wall(session: Session, event_id: int, enabled: bool) -> Event:
    """Turn the event's public results wall (/wall?event=CODE) on or off."""
    event = session.get(Event, event_id)
    if event is None:
        raise EventInvalid("This event no longer exists.")
    event.wall_enabled = enabled
    return event
