"""Handoff policies: each returns a continuous score; the decision is ``score >= threshold``.

Keeping score and decision apart means any other threshold can be replayed from stored scores.
A policy has a name, a version and a stage: ``pre`` decides from the conversation before local
generation (so the cloud call can start at once), ``post`` from the local draft. Post policies
marked ``early`` may also be scored on the draft while it is being written (see comparison.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from feedback.records import DecisionRecord
from feedback.repetition import LoopRule, repetition
from playground.handoff.base import Policy, PolicyInput, PolicyUnavailable, Stage
from playground.handoff.router import RouterPolicy
from playground.handoff.self_handoff import SelfHandoffPolicy
from playground.handoff.signals import token_signals

if TYPE_CHECKING:
    from playground.engine.contract import LocalModelEngine
    from playground.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicyDecision:
    """What the live policy decided for one turn (``db.models.HandoffDecision`` is its stored row)."""

    policy: str
    version: str
    stage: Stage
    threshold: float
    score: float
    handoff: bool
    reason: str | None
    latency_ms: float
    signals: dict[str, Any]

    def record(
        self,
        *,
        signals: dict[str, Any],
        blocked_by: str | None,
        shadow_propensity: float | None,
        engine: str | None,
    ) -> DecisionRecord:
        """The decision as capture stores it, with what the turn added (the only place it is copied)."""
        return DecisionRecord(
            **{name: getattr(self, name) for name in ("policy", "stage", "threshold", "score", "reason", "latency_ms")},
            policy_version=self.version,
            handed_off=self.handoff,
            signals=signals,
            blocked_by=blocked_by,
            shadow_propensity=shadow_propensity,
            engine=engine,
        )


def _clip01(value: float) -> float:
    return min(1.0, max(0.0, value))


class NeverPolicy:
    name, version, stage, early = "never", "1", "pre", False

    def score(self, data: PolicyInput, signals: dict[str, Any]) -> tuple[float, str | None]:
        return 0.0, None


class AlwaysPolicy:
    name, version, stage, early = "always", "1", "pre", False

    def score(self, data: PolicyInput, signals: dict[str, Any]) -> tuple[float, str | None]:
        return 1.0, "policy hands every request off"


class ConfidencePolicy:
    """Low confidence in the local draft, or a draft that repeats itself, means hand off.

    confidence = 0.4·clip(−p10_logprob / 6) + 0.2·clip(−min_logprob / 12)
               + 0.2·clip(mean_entropy / 3) + 0.2·clip(max_entropy / 6),
    each term in [0, 1], so it is in [0, 1] and grows as the answer gets less certain (version 1
    was this alone). Version 2: score = max(confidence, repetition), where ``repetition`` is the
    highest share of the draft's word 4-grams that repeat earlier ones over a window
    (``feedback.repetition``): 0 for ordinary prose, 1 for a loop. A looping draft is confidently
    written (its tokens are likely), so the log-prob terms alone keep it local.
    """

    name, version, stage, early = "confidence", "2", "post", True

    def score(self, data: PolicyInput, signals: dict[str, Any]) -> tuple[float, str | None]:
        if not signals.get("tokens"):
            return 1.0, "the local model produced no answer"
        confidence = (
            0.4 * _clip01(-signals["p10_logprob"] / 6)
            + 0.2 * _clip01(-signals["min_logprob"] / 12)
            + 0.2 * _clip01(signals["mean_entropy"] / 3)
            + 0.2 * _clip01(signals["max_entropy"] / 6)
        )
        repeated = _clip01(float(signals.get("repetition") or 0.0))
        if repeated > confidence:
            return repeated, f"repetition: {repeated:.0%} of the draft's recent word 4-grams repeat earlier ones"
        reason = f"low confidence: p10 log-prob {signals['p10_logprob']:.2f}, max entropy {signals['max_entropy']:.2f}"
        return confidence, reason


POLICY_NAMES = ("never", "always", "confidence", "self", "router")
SIMPLE: dict[str, type] = {p.name: p for p in (NeverPolicy, AlwaysPolicy, ConfidencePolicy)}


class UnknownPolicy(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Unknown handoff policy {name!r}; choose one of: {', '.join(POLICY_NAMES)}.")


NEEDS_LOGPROBS = frozenset({"confidence"})  # policies that score the draft's per-token log-probs


def get_policy(name: str, settings: Settings | None = None, engine: LocalModelEngine | None = None) -> Policy:
    """Build a policy by name; raises ``PolicyUnavailable`` when it cannot run here (and says why)."""
    if name in NEEDS_LOGPROBS and engine is not None and not getattr(engine, "gives_logprobs", True):
        raise PolicyUnavailable(
            f"The {name} policy (and early handoff) scores per-token log-probs, but the local model server at "
            f"{engine.base_url_host} returns none. Serve the model where log-probs come back (llama.cpp's "
            "llama-server; vLLM with --max-logprobs 20) or choose a policy that needs none."
        )
    if name in SIMPLE:
        return SIMPLE[name]()
    if name == "self":
        return SelfHandoffPolicy.for_engine(engine)
    if name == "router":
        if settings is None:
            raise PolicyUnavailable("The router policy needs the settings to find its trained model.")
        return RouterPolicy.load(settings)
    raise UnknownPolicy(name)


LAST_RESORT = "never"  # runs on any engine: the answer stays local


def resolve_policy(
    name: str | None, settings: Settings, engine: LocalModelEngine | None = None
) -> tuple[Policy, str | None]:
    """The live policy for an event: its own choice, else the settings'; falls back when unavailable.

    Returns (policy, note); the note says why the fallback policy is live instead (logged too). When
    the fallback cannot run either (``confidence`` on a server without log-probs), ``never`` does.
    """
    requested = name or settings.handoff_policy
    try:
        return get_policy(requested, settings, engine), None
    except PolicyUnavailable as error:
        fallback = settings.handoff_fallback_policy
        try:
            policy = get_policy(fallback, settings, engine)
        except PolicyUnavailable as second:
            fallback, policy = LAST_RESORT, get_policy(LAST_RESORT, settings, engine)
            error = PolicyUnavailable(f"{error} The fallback cannot run either: {second}")
        note = f"{error} Falling back to the {fallback!r} policy."
        log.warning(note)
        return policy, note


def decide(
    policy: Policy,
    threshold: float,
    data: PolicyInput,
    extra: dict[str, Any] | None = None,
    running_max: float | None = None,
    loop_rule: LoopRule | None = None,
) -> PolicyDecision:
    """Score with the live policy, always computing every cheap signal alongside.

    ``extra`` carries signals computed elsewhere (router score, early-handoff facts): its
    ``scores`` merge into the per-policy scores, the rest is stored as is. ``running_max`` is the
    highest score seen while the draft was being written (early handoff): the stored score is the
    max of it and the final score, so ``score >= threshold`` stays exactly the live decision.
    ``loop_rule`` (the settings') says when the draft's repetition counts as a loop (``looped``).
    """
    started = time.perf_counter()
    signals: dict[str, Any] = token_signals(data.logprobs, data.entropies)
    signals.update(repetition(data.draft, loop_rule).as_signals())
    score, reason = policy.score(data, signals)
    if running_max is not None:
        signals["final_score"] = float(score)
        score = max(score, running_max)
    # Every policy score computed for this turn, keyed by policy name, so researchers can compare
    # policies (AUROC, replay) on the same turns without re-running anything.
    scores: dict[str, float] = {}
    if data.logprobs or policy.stage == "post":
        scores["confidence"] = float(ConfidencePolicy().score(data, signals)[0])
    extra = dict(extra or {})
    scores.update(extra.pop("scores", {}))
    scores[policy.name] = float(score)
    signals.update(extra)
    signals["scores"] = scores
    handoff = score >= threshold
    latency_ms = (time.perf_counter() - started) * 1000
    signals["decision_latency_ms"] = latency_ms
    return PolicyDecision(
        policy=policy.name,
        version=policy.version,
        stage=policy.stage,
        threshold=threshold,
        score=float(score),
        handoff=handoff,
        reason=reason if handoff else None,
        latency_ms=latency_ms,
        signals=signals,
    )
