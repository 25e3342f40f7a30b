"""Energy per answer, estimated the way ComparIA shows it next to each answer.

Cloud answers: EcoLogits (https://ecologits.ai, methodology in its docs "LLM inference"), which
estimates the energy of one generation from the model's (estimated) parameter count, the number of
output tokens and the provider's data-centre PUE; it returns a range and we keep its midpoint. A
model EcoLogits does not list (the offline stand-in, a renamed model) is estimated as
``fallback_model`` and the stored method says so, like an unknown model's price.

Local answers: measured compute time × the device's power draw, an operator setting (the power
of *this* machine is not knowable from software in general). A batched generation shares the
device with other rows, so this is an upper bound per answer.

Every estimate is stored with the answer, with the method that produced it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from feedback.records import AnswerRecord

CHARS_PER_TOKEN = 4  # only when a provider returned no token count (a stopped stream)


@dataclass(frozen=True)
class EnergyEstimate:
    wh: float
    method: str


@lru_cache(maxsize=1)
def _ecologits_version() -> str:
    from importlib.metadata import version

    return version("ecologits")


def _ecologits_wh(provider: str, model: str, tokens_out: int, latency_s: float) -> float | None:
    """EcoLogits' energy midpoint in Wh, or None when it has no figures for this model."""
    from ecologits.tracers.utils import llm_impacts  # imported here: 1-2 s, only when a cloud answer is stored

    impacts = llm_impacts(provider, model, tokens_out, latency_s)
    if impacts.energy is None:
        return None
    value = impacts.energy.value
    kwh = (value.min + value.max) / 2 if hasattr(value, "min") else float(value)
    return kwh * 1000


def cloud_energy(
    model: str, tokens_out: int, latency_s: float, *, provider: str = "openai", fallback_model: str = "gpt-4.1-mini"
) -> EnergyEstimate:
    """Energy of one cloud generation of ``tokens_out`` tokens (EcoLogits, midpoint of its range)."""
    version = _ecologits_version()
    wh = _ecologits_wh(provider, model, tokens_out, latency_s)
    if wh is not None:
        return EnergyEstimate(wh, f"ecologits {version}: {provider}/{model}")
    wh = _ecologits_wh(provider, fallback_model, tokens_out, latency_s)
    if wh is None:
        raise ValueError(f"EcoLogits {version} has no figures for the fallback model {provider}/{fallback_model}")
    return EnergyEstimate(wh, f"ecologits {version}: {provider}/{fallback_model} (for unlisted {model})"[:120])


def local_energy(compute_s: float, watts: float) -> EnergyEstimate:
    """Energy of a local generation: measured compute time × the device's power draw."""
    return EnergyEstimate(compute_s * watts / 3600, f"measured time x {watts:g} W")


def annotate(answer: AnswerRecord, *, local_watts: float, provider: str, fallback_model: str) -> None:
    """Set ``energy_wh`` and ``energy_method`` on an answer about to be stored (None when unknown)."""
    if answer.latency_ms is None or (answer.source == "cloud" and answer.error_kind is not None):
        return
    seconds = answer.latency_ms / 1000
    if answer.source == "local":
        estimate = local_energy(seconds, local_watts)
    else:
        tokens = answer.tokens_out
        if tokens is None:
            tokens = math.ceil(len(answer.text) / CHARS_PER_TOKEN)
        estimate = cloud_energy(answer.model, tokens, seconds, provider=provider, fallback_model=fallback_model)
    answer.energy_wh, answer.energy_method = estimate.wh, estimate.method
