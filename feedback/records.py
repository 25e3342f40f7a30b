"""Plain records of what happened in a turn, handed from the inference layer to capture."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from db.models import new_uid


@dataclass
class AnswerRecord:
    arm: str  # off | on | shadow
    source: str  # local | cloud
    text: str
    model: str
    model_revision: str | None = None
    dtype: str | None = None
    engine: str | None = None  # local answers: transformers | llamacpp | openai
    base_url_host: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    finish_reason: str | None = None
    retries: int = 0
    error_kind: str | None = None
    error: str | None = None
    cost: Decimal | None = None
    price_version: str | None = None
    energy_wh: float | None = None  # feedback.energy: an estimate, with the method that made it
    energy_method: str | None = None
    # how it was decoded (max_new_tokens, temperature, top_p, repetition_penalty, no_repeat_ngram_size;
    # None for a parameter the engine could not apply); a real cloud model: max_new_tokens only
    decoding: dict[str, Any] | None = None


@dataclass
class DecisionRecord:
    policy: str
    policy_version: str
    stage: str
    threshold: float
    score: float
    handed_off: bool
    latency_ms: float
    signals: dict[str, Any]
    reason: str | None = None
    blocked_by: str | None = None
    shadow_propensity: float | None = None
    engine: str | None = None  # the local engine whose draft was scored


@dataclass
class TurnRecord:
    prompt: str
    decision: DecisionRecord
    answers: list[AnswerRecord] = field(default_factory=list)
    language: str | None = None
    category: str | None = None
    # made once per turn, before the first attempt to store it: a retry after a lost commit
    # acknowledgement finds the stored turn by it instead of adding a second one
    uid: str = field(default_factory=new_uid)

    def answer(self, arm: str) -> AnswerRecord | None:
        return next((a for a in self.answers if a.arm == arm), None)
