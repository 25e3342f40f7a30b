"""The attendee link of an event and its printable QR code (``segno``)."""

from __future__ import annotations

import io
from urllib.parse import urlencode

import segno

from playground.settings import Settings


def attendee_link(code: str, settings: Settings) -> str:
    """The URL that opens the attendee page already joined to this event."""
    base = settings.public_url or f"http://localhost:{settings.port}"
    return f"{base.rstrip('/')}/?{urlencode({'event': code})}"


def wall_link(code: str, settings: Settings) -> str:
    """The URL of the event's public results wall (shown only while the organizer has it on)."""
    base = settings.public_url or f"http://localhost:{settings.port}"
    return f"{base.rstrip('/')}/wall?{urlencode({'event': code})}"


def qr_code(link: str, kind: str = "png", scale: int = 10) -> bytes:
    """A QR code of the link, as PNG (to show and print) or SVG (to scale for posters)."""
    buffer = io.BytesIO()
    segno.make(link, error="m").save(buffer, kind=kind, scale=scale, border=4)
    return buffer.getvalue()
