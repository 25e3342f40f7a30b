"""Names of the arms as "models", for battle records and leaderboards.

The off arm is the local model; the on arm is the local model plus its handoff policy and threshold,
so events that ran different models or thresholds show up as different arms (a leaderboard of >2).
"""

from __future__ import annotations


def arm_names(model_off: str | None, policy: str | None = None, threshold: float | None = None) -> dict[str, str]:
    """Both arms' names; ``policy`` and ``threshold`` are the turn's stored decision (None: no decision stored)."""
    local = model_off or "local"
    if policy is None:
        return {"off": local, "on": f"{local}+handoff"}
    return {"off": local, "on": f"{local}+handoff[{policy}>={threshold:g}]"}
