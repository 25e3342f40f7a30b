"""Names of the arms as "models", for battle records and leaderboards.

The off arm is the local model; the on arm is the local model plus its handoff policy and threshold,
so events that ran different models or thresholds show up as different arms (a leaderboard of >2).
"""

from __future__ import annotations

from feedback.export.dataset import DecisionRow


def arm_names(model_off: str | None, decision: DecisionRow | None) -> dict[str, str]:
    local = model_off or "local"
    if decision is None:
        return {"off": local, "on": f"{local}+handoff"}
    return {"off": local, "on": f"{local}+handoff[{decision.policy}>={decision.threshold:g}]"}
