"""The report as a list of blocks, rendered to Markdown and to standalone HTML from the same blocks,
so both show exactly the numbers in summary.json (numbers are shown in `code` spans)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

from feedback.report import charts
from feedback.report.sections import num, research_blocks
from feedback.stats import win_rate_in_words
from feedback.units import format_ms, format_percent, format_usd, format_wh

Block = tuple[str, Any]


def _ci(seg: dict[str, Any]) -> str:
    return f"{num(seg['ci95'][0], seg['ci95'])}–{num(seg['ci95'][1], seg['ci95'])}" if seg["ci95"] else "`n/a`"


def _rate(seg: dict[str, Any]) -> str:
    return num(seg["handoff_on_win_rate"], seg["ci95"])


def _segment_table(segments: dict[str, dict[str, Any]]) -> Block:
    rows = [
        [
            key,
            num(s["votes"]),
            num(s["decided"]),
            num(s.get("participants")),
            _rate(s),
            _ci(s),
            num(s["tie_rate"]),
            num(s["both_bad_rate"]),
            num(s["identical_rate"]),
            "small sample" if s["small"] else "",
        ]
        for key, s in segments.items()
    ]
    head = [
        "segment",
        "votes",
        "decided",
        "participants",
        "handoff-on win rate",
        "CI (95%)",
        "tie",
        "both bad",
        "identical",
        "note",
    ]
    return ("table", (head, rows))


def _where(summary: dict[str, Any], shown: int = 4) -> str:
    """Segments whose whole CI is above (or below) an even split, strongest first, in words."""
    helps: list[tuple[float, str]] = []
    hurts: list[tuple[float, str]] = []
    for section in ("by_region", "by_category", "by_language"):
        for key, seg in summary[section].items():
            ci, rate = seg["ci95"], seg["handoff_on_win_rate"]
            if ci and ci[0] > 0.5:
                helps.append((-rate, f"{key} ({format_percent(rate)})"))
            elif ci and ci[1] < 0.5:
                hurts.append((rate, f"{key} ({format_percent(rate)})"))

    def listed(items: list[tuple[float, str]]) -> str:
        names = [name for _, name in sorted(items)]
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        return ", ".join(names[:shown]) + more

    parts = [
        f"clearly helps in {listed(helps)}" if helps else "no region, category or language where it clearly helps yet",
        f"clearly hurts in {listed(hurts)}" if hurts else "none where it clearly hurts",
    ]
    return "Where: it " + "; ".join(parts) + " (clearly: the whole 95% CI is on one side of an even split)."


def _cost(summary: dict[str, Any]) -> str:
    hand, energy = summary["handoff"], summary.get("energy") or {}
    parts = [f"handoff sent {format_percent(hand['handoff_rate'])} of {hand['turns']:,} prompts to the cloud"]
    if hand["cost_per_1000_prompts"] is not None:
        parts.append(f"cloud spend {format_usd(hand['cost_per_1000_prompts'])} per 1,000 prompts")
    if hand["added_latency_ms_p50"] is not None:
        parts.append(f"a handed-off answer took {format_ms(hand['added_latency_ms_p50'])} longer (median)")
    if energy.get("handoff_wh_per_1000_prompts") is not None:
        parts.append(
            f"energy {format_wh(energy['handoff_wh_per_1000_prompts'])} per 1,000 prompts with handoff against "
            f"{format_wh(energy['local_wh_per_1000_prompts'])} for the local model alone (estimates)"
        )
    return "At what cost: " + "; ".join(parts) + "."


def lead(summary: dict[str, Any]) -> list[Block]:
    """One screen: does handoff help, where, at what cost, with the CIs in words."""
    o = summary["overall"]
    ci = tuple(o["ci95"]) if o["ci95"] else None
    return [
        ("h1", "Does handoff help? Improvement report"),
        ("lead", [win_rate_in_words(o["handoff_on_win_rate"], ci, o["decided"]), _where(summary), _cost(summary)]),
        ("chart", charts.win_rates(summary["by_region"], "Handoff win rate by region, with 95% CI")),
        (
            "p",
            f"{o['votes']:,} votes; filters: {', '.join(f'{k} = {v}' for k, v in summary['filters'].items()) or 'none'}. "
            "Exact numbers are in the folded tables below and in summary.json.",
        ),
    ]


def headline(summary: dict[str, Any]) -> list[Block]:
    """The overall numbers as stored, with the bootstrap settings."""
    o, h = summary["overall"], summary["when_handed_off"]
    return [
        ("h2", "Overall"),
        (
            "list",
            [
                f"Handoff-on win rate over {num(o['decided'])} decided votes (of {num(o['votes'])}, from "
                f"{num(o.get('participants'))} participants): {_rate(o)}, CI (95%) {_ci(o)}.",
                f"Tie rate {num(o['tie_rate'])}, both-bad rate {num(o['both_bad_rate'])}, identical rate {num(o['identical_rate'])}.",
                f"When a handoff happened: win rate {_rate(h)} over {num(h['decided'])} decided votes, CI {_ci(h)}.",
                f"Position bias: the left pane won {num(summary['position_bias']['left_win_rate'])} of "
                f"{num(summary['position_bias']['decided'])} decided votes.",
            ],
        ),
        (
            "p",
            f"Bootstrap: seed {num(summary['seed'])}, rounds {num(summary['rounds'])}. Segments with fewer than "
            f"{num(summary['small_segment_threshold'])} decided votes are flagged, not hidden.",
        ),
    ]


def segments(summary: dict[str, Any]) -> list[Block]:
    """Win rates per region, event, category and language: a chart each, the table folded."""
    out: list[Block] = [("h2", "Where handoff helps")]
    for key, title in (
        ("by_region", "By region"),
        ("by_event", "By event"),
        ("by_category", "By category"),
        ("by_language", "By language"),
    ):
        out += [
            ("h3", title),
            ("p", "Each row: handoff-on win rate over decided votes, with a CI that resamples participants."),
            (
                "chart",
                charts.win_rates(summary[key], f"Handoff win rate {title.lower()}") if key != "by_region" else None,
            ),
            ("details", (f"Table: {title.lower()}", [_segment_table(summary[key])])),
        ]
    return out


def leaderboard(summary: dict[str, Any]) -> list[Block]:
    """Bradley-Terry ratings of the arms (the local model and each live threshold)."""
    out: list[Block] = []
    board = summary["leaderboard"]
    if board:
        out += [
            ("h2", "Arms leaderboard (Bradley-Terry, ties as half)"),
            ("chart", charts.leaderboard(board) if len(board) > 2 else None),
            (
                "p",
                f"Each row: an arm's rating on the Elo scale (mean 1000) with a CI that resamples the "
                f"{num(summary.get('leaderboard_participants'))} participants, and the battles it was in.",
            ),
            (
                "details",
                (
                    "Table: ratings",
                    [
                        (
                            "table",
                            (
                                ["arm", "rating", "lower", "upper", "battles"],
                                [
                                    [
                                        r["arm"],
                                        num(r["rating"], (r["lower"], r["upper"])),
                                        num(r["lower"], (r["lower"], r["upper"])),
                                        num(r["upper"], (r["lower"], r["upper"])),
                                        num(r["battles"]),
                                    ]
                                    for r in board
                                ],
                            ),
                        )
                    ],
                ),
            ),
        ]
    return out


def handoff(summary: dict[str, Any]) -> list[Block]:
    """Handoff rate, cost, added latency, the threshold replay and how well each score predicts a win."""
    hand = summary["handoff"]
    replay = hand["replay"]
    out: list[Block] = [
        ("h2", "Handoff analysis"),
        (
            "list",
            [
                f"Handoff rate {num(hand['handoff_rate'])} ({num(hand['handed_off'])} of {num(hand['turns'])} turns).",
                f"Cloud cost per 1,000 prompts: {num(hand['cost_per_1000_prompts'])}.",
                f"Added latency when handed off: p50 {num(hand['added_latency_ms_p50'])} ms, p95 {num(hand['added_latency_ms_p95'])} ms.",
                *(
                    [
                        f"Replay ({replay['policy']}): live handoff rate {num(replay['live_handoff_rate'])}, recommended threshold "
                        f"{num(replay['recommended_threshold'])}."
                    ]
                    if replay
                    else ["Replay: no stored decisions."]
                ),
                *[
                    f"AUROC of the {name} score against 'handoff answer won': {num(v['auroc'])} (n = {num(v['n'])})."
                    for name, v in hand["auroc"].items()
                ],
            ],
        ),
    ]
    if replay:
        out += [
            ("chart", charts.replay_curve(replay["curve"], replay["recommended_threshold"])),
            (
                "p",
                "Each row: one threshold replayed on the stored scores: what share would hand off, and at what gain and cost.",
            ),
            (
                "details",
                (
                    "Table: replay curve",
                    [
                        (
                            "table",
                            (
                                [
                                    "threshold",
                                    "handoff rate",
                                    "est. win rate",
                                    "gain per vote",
                                    "cost / 1,000",
                                    "imputed share",
                                ],
                                [
                                    [
                                        num(p["threshold"]),
                                        num(p["handoff_rate"]),
                                        num(p["win_rate"]),
                                        num(p["net_gain"]),
                                        num(p["cost_per_1000"]),
                                        num(p["imputed_share"]),
                                    ]
                                    for p in replay["curve"]
                                ],
                            ),
                        )
                    ],
                ),
            ),
        ]
    return out


def energy(summary: dict[str, Any]) -> list[Block]:
    """Estimated energy and cloud cost per 1,000 prompts for each arm."""
    e = summary.get("energy")
    if not e or not e["prompts_with_estimates"]:
        return [("h2", "Energy and cost"), ("p", "No energy estimates stored yet.")]
    return [
        ("h2", "Energy and cost"),
        ("chart", charts.energy(e)),
        (
            "list",
            [
                f"Local model alone: {num(e['local_wh_per_1000_prompts'])} Wh per 1,000 prompts.",
                f"With handoff: {num(e['handoff_wh_per_1000_prompts'])} Wh and "
                f"{num(e['handoff_cost_per_1000_prompts'])} USD of cloud calls per 1,000 prompts.",
                f"Over {num(e['prompts_with_estimates'])} prompts with estimates; method: {e['method']}.",
            ],
        ),
    ]


def improve(summary: dict[str, Any]) -> list[Block]:
    """Where the local model loses, where handoff hurts, prompt clusters, tags, comments, worst answers."""
    imp = summary["improvement"]
    return [
        ("h2", "What to improve"),
        ("h3", "Where the local model loses most"),
        ("list", imp["findings"]["local_loses_most"] or ["No segment where the local model clearly loses."]),
        ("h3", "Where handoff hurts (cloud worse)"),
        ("list", imp["findings"]["handoff_hurts"] or ["No segment where the cloud answer is clearly worse."]),
        ("h3", "Prompt clusters"),
        (
            "p",
            "Each row: a group of similar decided prompts, named by a representative prompt, and how often handoff won.",
        ),
        (
            "details",
            (
                f"Table: {len(imp['prompt_clusters'])} prompt clusters, worst for the local model first",
                [
                    (
                        "table",
                        (
                            ["cluster (its most representative prompt)", "language", "decided", "handoff-on win rate"],
                            [
                                [c["label"], c["language"], num(c["decided"]), num(c["handoff_on_win_rate"])]
                                for c in imp["prompt_clusters"]
                            ]
                            or [["no clusters (run `handoff report`, which loads the sentence encoder)", "", "", ""]],
                        ),
                    )
                ],
            ),
        ),
        ("h3", "Reason tags by arm"),
        (
            "list",
            [
                f"{arm}: " + ", ".join(f"{tag} {num(n)}" for tag, n in tags.items())
                for arm, tags in imp["reason_tags"].items()
            ]
            or ["No tags."],
        ),
        ("h3", "Comment themes (redacted)"),
        (
            "list",
            [
                f"{t['label']} ({num(t['comments'])} comments): " + " / ".join(f"“{c}”" for c in t["examples"])
                for t in imp["comment_themes"]
            ]
            or ["No comments."],
        ),
        ("h3", "Worst-rated examples (redacted)"),
        (
            "list",
            [
                f"{e['arm']} arm, {num(e['stars'])} stars, {e['category']}: “{e['prompt']}” → “{e['answer']}”"
                for e in imp["worst_rated"]
            ]
            or ["No ratings."],
        ),
    ]


def ratings(summary: dict[str, Any]) -> list[Block]:
    """Star distributions per arm and how often two verdicts on the same prompt agree."""
    ratings = summary["ratings"]
    inter = ratings["inter_rater"]
    return [
        ("h2", "Ratings"),
        ("chart", charts.stars(ratings["stars"])),
        ("p", "Each row: how many answers of an arm got each number of stars."),
        (
            "details",
            (
                "Table: stars per arm",
                [
                    (
                        "table",
                        (
                            ["arm", *[f"{s} stars" for s in range(1, 6)], "mean"],
                            [
                                [arm, *[num(d[str(s)]) for s in range(1, 6)], num(ratings["mean_stars"][arm])]
                                for arm, d in sorted(ratings["stars"].items())
                            ],
                        ),
                    )
                ],
            ),
        ),
        (
            "p",
            f"Inter-rater: {num(inter['prompts_rated_more_than_once'])} prompts were voted on more than once; "
            f"{num(inter['verdict_pairs'])} pairs of verdicts on the same prompt agree {num(inter['agreement'])} of the time.",
        ),
    ]


def research(summary: dict[str, Any]) -> list[Block]:
    """Is the effect real: style control, latency and blindness, vote quality, calibration, judges."""
    return research_blocks(summary["research"], summary["handoff"]["replay"])


# The report, in order: one function per section (add a section by adding a function here).
SECTIONS: list[Callable[[dict[str, Any]], list[Block]]] = [
    lead,
    headline,
    segments,
    energy,
    handoff,
    leaderboard,
    improve,
    ratings,
    research,
]


def blocks(summary: dict[str, Any]) -> list[Block]:
    """Every section's blocks, charts without data left out."""
    return _drop_empty([block for section in SECTIONS for block in section(summary)])


def _drop_empty(items: list[Block]) -> list[Block]:
    out = []
    for kind, value in items:
        if kind == "chart" and value is None:
            continue
        if kind == "details":
            value = (value[0], _drop_empty(value[1]))
        out.append((kind, value))
    return out


def to_markdown(items: list[Block]) -> str:
    lines: list[str] = []
    for kind, value in items:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + value, ""]
        elif kind == "p":
            lines += [value, ""]
        elif kind == "lead":
            lines += [f"> **{item}**\n>" for item in value] + [""]
        elif kind == "list":
            lines += [f"- {item}" for item in value] + [""]
        elif kind == "table":
            head, rows = value
            lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
            lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows] + [""]
        elif kind == "chart":
            title = value.to_dict().get("title", "chart")
            lines += [f"*(chart in report.html: {title.get('text') if isinstance(title, dict) else title})*", ""]
        elif kind == "details":
            summary, inner = value
            lines += [f"**{summary}**", "", to_markdown(inner)]
    return "\n".join(lines)


def _inline(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(str(text), quote=False))


# Standalone and offline: one inline stylesheet, charts as inline SVG, no script, font or image fetched.
STYLE = """
:root{--ink:#1b1f24;--muted:#57606a;--line:#d0d7de;--accent:#0b5cad;--paper:#fff;--soft:#f6f8fa}
*{box-sizing:border-box}
body{font:17px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--paper);
max-width:64rem;margin:0 auto;padding:2rem 1.25rem 4rem}
h1{font-size:2.1rem;line-height:1.2;margin:0 0 1rem}
h2{font-size:1.5rem;margin:2.5rem 0 .75rem;padding-top:1rem;border-top:1px solid var(--line)}
h3{font-size:1.15rem;margin:1.5rem 0 .5rem}
.lead{background:var(--soft);border-left:6px solid var(--accent);border-radius:6px;padding:1rem 1.5rem;margin:0 0 1rem}
.lead p{font-size:1.25rem;line-height:1.45;margin:.6rem 0}
.lead p:first-child{font-size:1.45rem;font-weight:600}
figure{margin:1rem 0;overflow-x:auto}figure svg{max-width:100%;height:auto}
details{margin:.5rem 0 1.25rem;border:1px solid var(--line);border-radius:6px;padding:.4rem .8rem}
details summary{cursor:pointer;color:var(--muted);font-weight:600}
table{border-collapse:collapse;margin:.75rem 0;font-size:.92rem;width:100%}
td,th{border-bottom:1px solid var(--line);padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:var(--soft)}code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}
ul{padding-left:1.25rem}li{margin:.25rem 0}
@media print{details{border:none}details>*{display:block}}
"""


def _html_blocks(items: list[Block]) -> list[str]:
    body: list[str] = []
    for kind, value in items:
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{_inline(value)}</{kind}>")
        elif kind == "lead":
            body.append('<div class="lead">' + "".join(f"<p>{_inline(i)}</p>" for i in value) + "</div>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
        elif kind == "table":
            head, rows = value
            body.append(
                "<table><thead><tr>"
                + "".join(f"<th>{_inline(h)}</th>" for h in head)
                + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                + "</tbody></table>"
            )
        elif kind == "chart":
            body.append(f"<figure>{charts.to_svg(value)}</figure>")
        elif kind == "details":
            summary, inner = value
            body.append(f"<details><summary>{_inline(summary)}</summary>" + "".join(_html_blocks(inner)) + "</details>")
    return body


def to_html(items: list[Block]) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Does handoff help? Improvement report</title><style>{STYLE}</style></head><body>"
        + "\n".join(_html_blocks(items))
        + "</body></html>\n"
    )
