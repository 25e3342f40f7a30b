"""Cheap statistics of a local answer's tokens, stored with every turn for offline replay."""

from __future__ import annotations

import numpy as np


def token_signals(logprobs: list[float], entropies: list[float]) -> dict[str, float]:
    """Min / low-quantile / mean log-prob and mean / max entropy (nats) of the sampled tokens.

    Mean log-prob alone did not separate wrong answers from right ones on the bundled model; the
    low tail (min, p10, p25) and the entropy peaks carry the signal.
    """
    if not logprobs:
        return {"tokens": 0.0}
    lp = np.asarray(logprobs, dtype=np.float64)
    ent = np.asarray(entropies, dtype=np.float64)
    return {
        "tokens": float(lp.size),
        "min_logprob": float(lp.min()),
        "p10_logprob": float(np.quantile(lp, 0.10)),
        "p25_logprob": float(np.quantile(lp, 0.25)),
        "mean_logprob": float(lp.mean()),
        "mean_entropy": float(ent.mean()),
        "max_entropy": float(ent.max()),
    }
