"""The report's research sections (is the handoff effect real?) as blocks for ``render``.

Each section is one small function of summary.json's ``research`` part; numbers are rounded here,
for display only, to what their intervals support (``stats.shown``), never in summary.json.
"""

from __future__ import annotations

from typing import Any

from feedback.stats import shown_text

Block = tuple[str, Any]

ROUTELLM = "Ong et al. 2024, RouteLLM: Learning to Route LLMs with Preference Data (arXiv 2406.18665)"
FASTCHAT = "FastChat fastchat/serve/monitor/rating_systems.py (compute_style_control)"


def num(value: Any, ci: Any = None) -> str:
    """A number as shown: rounded to its CI (when given) or to 3 significant digits, in a code span."""
    if value is None:
        return "`n/a`"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"`{shown_text(value, ci)}`"


def estimate(value: Any, ci: Any) -> str:
    """``value (CI low–high)``, all three rounded to the precision the interval supports."""
    if value is None:
        return "`n/a`"
    if not ci:
        return num(value)
    return f"{num(value, ci)} (CI {num(ci[0], ci)}–{num(ci[1], ci)})"


def style_section(style: dict[str, Any] | None) -> list[Block]:
    out: list[Block] = [("h3", "Style control: better, or only longer?")]
    if not style:
        return [*out, ("p", "No decided votes with stored style features.")]
    raw, controlled = style["raw"], style["controlled"]
    explained = style["explained_percent"]
    sentence = (
        f"Style (length and markdown) explains `{shown_text(explained, significant=2)}` % of the handoff advantage."
        if explained is not None
        else "The handoff arm has no advantage to explain."
    )
    out += [
        (
            "p",
            f"P(handoff answer wins a decided vote), {num(raw['decided'])} votes from {num(raw['participants'])} "
            f"participants: {estimate(raw['win_probability'], raw['ci95'])} as voted; at equal style "
            f"{estimate(controlled['win_probability'], controlled['ci95'])}. {sentence} Method: style features "
            f"as covariates in the Bradley-Terry fit, normalised differences, participant bootstrap ({FASTCHAT}).",
        ),
        ("p", "Each row: mean of a style feature per arm, and how much one standard deviation of it moves the vote."),
        (
            "table",
            (
                ["feature", "mean (handoff)", "mean (local)", "effect on the vote (logit per SD)", "CI (95%)"],
                [
                    [
                        name,
                        num(style["mean_style"]["on"][name]),
                        num(style["mean_style"]["off"][name]),
                        num(controlled["coefficients"][name], controlled["coefficient_ci95"][name]),
                        _interval(controlled["coefficient_ci95"][name]),
                    ]
                    for name in controlled["coefficients"]
                ],
            ),
        ),
    ]
    return out


def _interval(ci: Any) -> str:
    return f"{num(ci[0], ci)}–{num(ci[1], ci)}" if ci else "`n/a`"


def latency_section(latency: dict[str, Any]) -> list[Block]:
    names = {"duration": "duration (a − b)", "ttft": "time to first token (a − b)", "finish_order": "a finished last"}
    out: list[Block] = [
        ("h3", "Latency and blindness: can timing reveal the handoff side?"),
        (
            "p",
            "Each row: how well one pane-timing signal (live display, handed-off turns) predicts that the handoff "
            "answer is on the left; an AUROC of one half means timing tells nothing, one that it gives the side away.",
        ),
        (
            "table",
            (
                ["signal", "AUROC", "CI (95%)", "votes", "participants"],
                [
                    [names[k], num(v["auroc"], v["ci95"]), _interval(v["ci95"]), num(v["n"]), num(v["participants"])]
                    for k, v in latency["signals"].items()
                ],
            ),
        ),
        (
            "p",
            "Timing leaks the side (the duration interval excludes one half)."
            if latency["leak_detected"]
            else "No timing leak detected (the duration interval includes one half).",
        ),
    ]
    effect = latency["effect"]
    if effect:
        out.append(
            (
                "p",
                f"Handoff win probability on the live display: {estimate(effect['raw']['win_probability'], effect['raw']['ci95'])}; "
                f"with the latency difference as a covariate: "
                f"{estimate(effect['with_latency']['win_probability'], effect['with_latency']['ci95'])}.",
            )
        )
    out += [
        (
            "p",
            "Each row: handoff-on win rate over decided votes by the display the voter saw (fair = panes released together).",
        ),
        (
            "table",
            (
                ["display", "decided", "participants", "win rate", "CI (95%)"],
                [
                    [k, num(v["decided"]), num(v["participants"]), num(v["rate"], v["ci95"]), _interval(v["ci95"])]
                    for k, v in latency["by_display"].items()
                ],
            ),
        ),
    ]
    return out


FILTER_NAMES = {
    "none": "no filter",
    "too_fast": "without too-fast votes",
    "flagged_participant": "without flagged participants",
    "reveals_origin": "without origin-revealing answers",
    "duplicate": "without repeated prompts",
    "all": "without all of these",
}


def quality_section(quality: dict[str, Any]) -> list[Block]:
    return [
        ("h3", "Vote quality"),
        (
            "p",
            f"{num(quality['flagged_participants'])} of {num(quality['participants'])} participants look automated "
            f"or careless (half their votes too fast to have read the answers, one side ≥ 95 %, or bursts); "
            f"{num(quality['too_fast_votes'])} votes were too fast. Exports keep every vote and carry these flags.",
        ),
        ("p", "Each row: the headline win rate after removing one group of flagged votes (and how many it removed)."),
        (
            "table",
            (
                ["filter", "votes removed", "decided left", "participants", "win rate", "CI (95%)"],
                [
                    [
                        FILTER_NAMES[k],
                        num(v["removed"]),
                        num(v["decided"]),
                        num(v["participants"]),
                        num(v["rate"], v["ci95"]),
                        _interval(v["ci95"]),
                    ]
                    for k, v in quality["filters"].items()
                ],
            ),
        ),
    ]


def calibration_section(replay: dict[str, Any] | None) -> list[Block]:
    if not replay or "routellm" not in replay:
        return []
    metrics = replay["routellm"]
    return [
        ("h3", "Cost and quality (RouteLLM metrics on the replay curve)"),
        (
            "list",
            [
                f"CPT(50%) = {num(metrics['cpt50'])}, CPT(80%) = {num(metrics['cpt80'])}: the smallest handoff share "
                "that recovers 50 % / 80 % of the quality gained by always handing off.",
                f"APGR = {num(metrics['apgr'])}: the average performance gap recovered, the area under (gain at a "
                "handoff share ÷ gain of always handing off) over shares 0…1 (one is ideal, one half is random routing).",
                f"Source of both: {ROUTELLM}; here quality is the replayed gain per voted turn.",
                f"Recommended threshold {num(replay['recommended_threshold'])}: {replay['recommended_rule']}. "
                "`handoff replay --target-handoff-rate R` or `--budget-per-1000 X` gives the threshold for a share or a budget.",
            ],
        ),
    ]


def judges_section(judges: dict[str, Any]) -> list[Block]:
    out: list[Block] = [("h3", "LLM judges against people")]
    if not judges:
        return [*out, ("p", "No judge verdicts; run `handoff judge --event CODE`.")]
    out += [
        (
            "p",
            "Each row: one judge model on decided human votes (its verdict asked in both orders; a verdict that "
            "changes with the order counts as a tie), agreement and Cohen's κ with participant-bootstrap CIs.",
        ),
        (
            "table",
            (
                ["judge", "pairs", "agreement", "CI (95%)", "κ", "CI (95%)", "order-consistent", "tokens", "cost"],
                [
                    [
                        model,
                        num(j["n"]),
                        num(j["agreement"], j["agreement_ci95"]),
                        _interval(j["agreement_ci95"]),
                        num(j["kappa"], j["kappa_ci95"]),
                        _interval(j["kappa_ci95"]),
                        num(j["position_consistent"]),
                        num(j["tokens"]),
                        num(j["cost"]),
                    ]
                    for model, j in judges.items()
                ],
            ),
        ),
    ]
    for model, j in judges.items():
        out += [
            ("p", f"{model}, by category: agreement per category of prompt."),
            (
                "table",
                (
                    ["category", "pairs", "agreement", "CI (95%)"],
                    [
                        [c, num(v["n"]), num(v["agreement"], v["agreement_ci95"]), _interval(v["agreement_ci95"])]
                        for c, v in j["by_category"].items()
                    ],
                ),
            ),
            ("p", f"{model}: pairs to review, where the judge chose the other arm in both orders (redacted)."),
            (
                "list",
                [
                    f"vote {d['vote_id']} ({d['category']}): people chose {d['human']}, the judge {d['judge']}: “{d['prompt']}”"
                    for d in j["disagreements"]
                ]
                or ["None."],
            ),
        ]
    return out


def research_blocks(research: dict[str, Any], replay: dict[str, Any] | None) -> list[Block]:
    """All research sections, in reading order."""
    return [
        ("h2", "Is the handoff effect real?"),
        *style_section(research["style_control"]),
        *latency_section(research["latency"]),
        *quality_section(research["vote_quality"]),
        *calibration_section(replay),
        *judges_section(research["judges"]),
    ]
