"""The data card written beside every export: what is in it, how it was made, under which terms."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import ModuleType

from sqlalchemy import select

from db.models import Event
from db.session import get_engine, head_revision
from feedback.export.dataset import ExportFilters, Tally, count_participants
from feedback.redaction import KINDS

SCHEMA_VERSION = "1"


def card_path(out: Path) -> Path:
    return out.with_name(out.name + ".card.md")


NO_LICENCE = "Licence not set: the organizer sets it on the event before publishing."


def write_card(
    url: str,
    out: Path,
    fmt: str,
    module: ModuleType,
    filters: ExportFilters,
    tally: Tally,
    rows: int,
    *,
    redact: bool,
    salted_with_setting: bool,
    default_licence: str,
) -> Path:
    """Markdown card: schema, field meanings, filters, counts, redaction, consent and licence."""
    with get_engine(url).connect() as connection:
        events = connection.execute(
            select(Event.code, Event.name, Event.region, Event.consent_text, Event.licence)
            .where(Event.id.in_(sorted(tally.event_ids)))
            .order_by(Event.code)
        ).all()
    filters_text = ", ".join(f"{k} = {v}" for k, v in filters.describe().items()) or "none (all events)"
    lines = [
        f"# Data card: `{out.name}`",
        "",
        f"- format: **{fmt}** (one {module.UNIT} per row), export schema version {SCHEMA_VERSION}, "
        f"database schema revision {head_revision()}",
        f"- created: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- filters: {filters_text}",
        "",
        "## Counts",
        "",
        f"| what | count |\n| --- | --- |\n| rows ({module.UNIT}s) | {rows:,} |",
        f"| conversations read | {tally.conversations:,} |\n| turns read | {tally.turns:,} |",
        f"| votes read | {tally.votes:,} |\n| participants | {count_participants(url, filters):,} |",
        f"| events | {len(events):,} |",
        *[f"| {what} | {count:,} |" for what, count in sorted(tally.skipped.items())],
        "",
        "## Fields",
        "",
        "| field | meaning |\n| --- | --- |",
        *[f"| `{name}` | {meaning} |" for name, meaning in module.FIELDS.items()],
        "",
        *[f"- {note}" for note in module.NOTES],
        "",
        "## Privacy",
        "",
        "- Only participants who gave consent are included; conversations and votes hidden by moderation are left out.",
        "- Participant ids are re-hashed (HMAC-SHA256) with a secret salt: "
        + (
            "the organizer's configured salt, so this export joins with others made with the same salt."
            if salted_with_setting
            else "a fresh random salt for this export only, so it can't be joined with other exports."
        ),
    ]
    if redact:
        found = ", ".join(f"{kind.replace('_', ' ')}: {tally.redactions[kind]:,}" for kind in KINDS)
        lines.append(
            "- PII redaction was ON for prompts, answers and comments (emails, phone numbers, IP addresses, "
            "credit-card-like numbers, API-key-like tokens, URLs with credentials), replaced by markers "
            f"such as `[EMAIL]`. Replaced: {found}."
        )
    else:
        lines.append("- **PII redaction was OFF**: for internal use only; do not publish this file.")
    lines += ["", "## Consent", ""]
    for event in events:
        consent = event.consent_text or "the default consent screen of the attendee page"
        lines.append(f"- {event.code} ({event.name}, {event.region}): participants agreed to: {consent}")
    lines += ["", "## Licence", ""]
    licences = {event.licence for event in events if event.licence}
    lines.append("; ".join(sorted(licences)) if licences else default_licence)
    path = card_path(out)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
