"""Handoff policies: each returns a continuous score; the decision is ``score >= threshold``.

Keeping score and decision apart means any other threshold can be replayed from stored scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from playground.handoff.signals import token_signals

Stage = Literal["pre", "post"]


@dataclass
class PolicyInput:
    """What a policy may look at: the conversation and, for ``post`` policies, the local draft."""

    messages: list[dict[str, str]]
    draft: str = ""
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class HandoffDecision:
    policy: str
    version: str
    stage: Stage
    threshold: float
    score: float
    handoff: bool
    reason: str | None
    latency_ms: float
    signals: dict[str, Any]


class Policy(Protocol):
    name: ClassVar[str]
    version: ClassVar[str]
    stage: ClassVar[Stage]

    def score(self, data: PolicyInput, signals: dict[str, float]) -> tuple[float, str | None]:
        """Return (score, human-readable reason)."""
        ...


def _clip01(value: float) -> float:
    return min(1.0, max(0.0, value))


class NeverPolicy:
    name, version, stage = "never", "1", "pre"

    def score(self, data: PolicyInput, signals: dict[str, float]) -> tuple[float, str | None]:
        return 0.0, None


class AlwaysPolicy:
    name, version, stage = "always", "1", "pre"

    def score(self, data: PolicyInput, signals: dict[str, float]) -> tuple[float, str | None]:
        return 1.0, "policy hands every request off"


class ConfidencePolicy:
    """Low confidence in the local draft means hand off.

    score = 0.4·clip(−p10_logprob / 6) + 0.2·clip(−min_logprob / 12)
          + 0.2·clip(mean_entropy / 3) + 0.2·clip(max_entropy / 6),
    each term in [0, 1], so the score is in [0, 1] and grows as the answer gets less certain.
    """

    name, version, stage = "confidence", "1", "post"

    def score(self, data: PolicyInput, signals: dict[str, float]) -> tuple[float, str | None]:
        if not signals.get("tokens"):
            return 1.0, "the local model produced no answer"
        score = (
            0.4 * _clip01(-signals["p10_logprob"] / 6)
            + 0.2 * _clip01(-signals["min_logprob"] / 12)
            + 0.2 * _clip01(signals["mean_entropy"] / 3)
            + 0.2 * _clip01(signals["max_entropy"] / 6)
        )
        reason = (
            f"low confidence: p10 log-prob {signals['p10_logprob']:.2f}, "
            f"max entropy {signals['max_entropy']:.2f}"
        )
        return score, reason


POLICIES: dict[str, type[Policy]] = {p.name: p for p in (NeverPolicy, AlwaysPolicy, ConfidencePolicy)}


class UnknownPolicy(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Unknown handoff policy {name!r}; choose one of: {', '.join(sorted(POLICIES))}.")


def get_policy(name: str) -> Policy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise UnknownPolicy(name) from None


def decide(policy: Policy, threshold: float, data: PolicyInput) -> HandoffDecision:
    """Score with the live policy, always computing every cheap signal alongside."""
    started = time.perf_counter()
    signals: dict[str, Any] = token_signals(data.logprobs, data.entropies)
    score, reason = policy.score(data, signals)
    # Every policy score computed for this turn, keyed by policy name, so researchers can compare
    # policies (AUROC, replay) on the same turns without re-running anything.
    signals["scores"] = {policy.name: float(score)}
    handoff = score >= threshold
    return HandoffDecision(
        policy=policy.name,
        version=policy.version,
        stage=policy.stage,
        threshold=threshold,
        score=float(score),
        handoff=handoff,
        reason=reason if handoff else None,
        latency_ms=(time.perf_counter() - started) * 1000,
        signals=signals,
    )
