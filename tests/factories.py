"""Test data, built one way: events as organizers create them and turn records as a comparison hands them over.

Every builder has defaults for what a test does not care about and takes what it does as keywords,
so a test shows only the facts its assertions depend on.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from db.models import Event
from db.session import session_scope
from feedback.records import AnswerRecord, DecisionRecord, TurnRecord

LOCAL_MODEL = "SmolLM2-135M-Instruct"
CLOUD_MODEL = "gpt-4.1-mini"


def make_event(url: str, code: str = "T-1", region: str = "sf", **fields: Any) -> int:
    """An event in ``region`` (name, city and timezone filled in); ``fields`` set any other column."""
    values: dict[str, Any] = {"name": f"{code} event", "city": "City", "timezone": "UTC", **fields}
    with session_scope(url) as session:
        event = Event(code=code, region=region, **values)
        session.add(event)
        session.flush()
        return event.id


def turn_record(
    prompt: str = "What is 2+2?",
    *,
    handed_off: bool = True,
    score: float | None = None,
    signals: dict[str, Any] | None = None,
    reason: str | None = None,
    blocked_by: str | None = None,
    language: str | None = "en",
    category: str | None = None,
    off_text: str = "local answer",
    on_text: str = "cloud answer",
    latency_off: float | None = None,
    latency_on: float | None = None,
    tokens_out: int | None = None,
    cost: Decimal | None = None,
    error_kind: str | None = None,
    base_url_host: str | None = None,
    energy_off: float | None = None,
    energy_on: float | None = None,
) -> TurnRecord:
    """A turn as the confidence policy at 0.5 would record it.

    The handoff arm shows the cloud answer (``on_text``) when the turn was handed off and nothing
    blocked the call; otherwise it shows the local answer, as the off arm does. ``score`` defaults to
    0.8 handed off, 0.2 kept local; ``signals`` to that score under ``scores``.
    """
    score = (0.8 if handed_off else 0.2) if score is None else score
    cloud = handed_off and blocked_by is None
    return TurnRecord(
        prompt=prompt,
        language=language,
        category=category,
        decision=DecisionRecord(
            policy="confidence",
            policy_version="1",
            stage="post",
            threshold=0.5,
            score=score,
            handed_off=handed_off,
            latency_ms=0.1,
            signals={"scores": {"confidence": score}} if signals is None else signals,
            reason=reason,
            blocked_by=blocked_by,
        ),
        answers=[
            AnswerRecord(
                arm="off",
                source="local",
                text=off_text,
                model=LOCAL_MODEL,
                tokens_out=tokens_out,
                latency_ms=latency_off,
                energy_wh=energy_off,
            ),
            AnswerRecord(
                arm="on",
                source="cloud" if cloud else "local",
                text=on_text if cloud else off_text,
                model=CLOUD_MODEL if cloud else LOCAL_MODEL,
                tokens_out=tokens_out,
                latency_ms=latency_on,
                cost=cost,
                error_kind=error_kind,
                base_url_host=base_url_host if cloud else None,
                energy_wh=energy_on,
            ),
        ],
    )
