"""How a finished turn becomes the records that capture stores, in one place.

Each engine's ``AnswerResult`` becomes an ``AnswerRecord`` here (local and cloud alike, a failed cloud
call's accounting kept on the local answer shown instead), the live policy's decision becomes a
``DecisionRecord`` through ``PolicyDecision.record``, and every answer gets its energy estimate.
``feedback.capture`` then turns these records into rows.
"""

from __future__ import annotations

from feedback import energy
from feedback.language import detect_language
from feedback.records import AnswerRecord, DecisionRecord, TurnRecord
from playground.engine.cloud import CloudResult
from playground.engine.contract import AnswerResult, LocalResult
from playground.settings import Settings

# What an AnswerRecord takes from every result, from a local one, and from the cloud call it represents.
_RESULT = (
    "text",
    "model",
    "base_url_host",
    "tokens_in",
    "tokens_out",
    "ttft_ms",
    "latency_ms",
    "finish_reason",
    "decoding",
)
_LOCAL = ("model_revision", "dtype", "engine")
_CALL = ("base_url_host", "retries", "error_kind", "error", "cost", "price_version")


def answer_record(arm: str, result: AnswerResult, failed_call: CloudResult | None = None) -> AnswerRecord:
    """One answer as stored; ``failed_call``: the cloud call this local answer stands in for."""
    local = isinstance(result, LocalResult)
    call = result if isinstance(result, CloudResult) else failed_call
    fields = {name: getattr(result, name) for name in _RESULT + (_LOCAL if local else ())}
    if call is not None:  # the call's accounting on whichever answer row represents it
        fields |= {name: getattr(call, name) for name in _CALL}
    return AnswerRecord(arm=arm, source="local" if local else "cloud", **fields)


def turn_record(
    prompt: str,
    category: str | None,
    decision: DecisionRecord,
    *,
    off: AnswerResult,
    on: CloudResult | None,
    on_local: AnswerResult | None,
    shadow: CloudResult | None,
    settings: Settings,
) -> TurnRecord:
    """The turn: the off arm's answer, the handoff arm's (the cloud's, or the local one shown instead
    with the failed call's accounting), a never-shown shadow call, each with its energy estimate."""
    answers = [answer_record("off", off)]
    if on is not None and on.ok:
        answers.append(answer_record("on", on))
    else:
        assert on_local is not None
        answers.append(answer_record("on", on_local, failed_call=on))
    if shadow is not None:
        answers.append(answer_record("shadow", shadow))
    for answer in answers:
        energy.annotate(
            answer,
            local_watts=settings.local_power_watts,
            provider=settings.energy_provider,
            fallback_model=settings.energy_fallback_model,
        )
    return TurnRecord(
        prompt=prompt,
        language=detect_language(prompt),
        category=category,
        decision=decision,
        answers=answers,
    )
