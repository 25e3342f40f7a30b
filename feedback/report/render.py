"""The report as a list of blocks, rendered to Markdown and to standalone HTML from the same blocks,
so both show exactly the numbers in summary.json (numbers are shown in `code` spans)."""

from __future__ import annotations

import html
import re
from typing import Any

from feedback.report import charts
from feedback.report.sections import num, research_blocks

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


def blocks(summary: dict[str, Any]) -> list[Block]:
    o, h, hand = summary["overall"], summary["when_handed_off"], summary["handoff"]
    out: list[Block] = [
        ("h1", "Improvement report: handoff on vs off"),
        (
            "p",
            f"Filters: {', '.join(f'{k} = {v}' for k, v in summary['filters'].items()) or 'none'}. "
            f"Bootstrap: seed {num(summary['seed'])}, rounds {num(summary['rounds'])}. Segments with fewer than "
            f"{num(summary['small_segment_threshold'])} decided votes are flagged, not hidden.",
        ),
        ("h2", "Headline"),
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
        ("chart", charts.win_rates(summary["by_region"], "Handoff-on win rate by region (95% CI)")),
    ]
    for key, title in (
        ("by_region", "By region"),
        ("by_event", "By event"),
        ("by_category", "By category"),
        ("by_language", "By language"),
    ):
        out += [
            ("h3", title),
            ("p", "Each row: handoff-on win rate over decided votes, with a CI that resamples participants."),
            _segment_table(summary[key]),
        ]
    board = summary["leaderboard"]
    if board:
        out += [
            ("h2", "Arms leaderboard (Bradley-Terry, ties as half)"),
            (
                "p",
                f"Each row: an arm's rating on the Elo scale (mean 1000) with a CI that resamples the "
                f"{num(summary.get('leaderboard_participants'))} participants, and the battles it was in.",
            ),
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
            ),
            ("chart", charts.leaderboard(board) if len(board) > 2 else None),
        ]
    replay = hand["replay"]
    out += [
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
            (
                "p",
                "Each row: one threshold replayed on the stored scores: what share would hand off, and at what gain and cost.",
            ),
            (
                "table",
                (
                    ["threshold", "handoff rate", "est. win rate", "gain per vote", "cost / 1,000", "imputed share"],
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
            ),
            ("chart", charts.replay_curve(replay["curve"], replay["recommended_threshold"])),
        ]
    imp = summary["improvement"]
    out += [
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
            "table",
            (
                ["cluster (its most representative prompt)", "language", "decided", "handoff-on win rate"],
                [
                    [c["label"], c["language"], num(c["decided"]), num(c["handoff_on_win_rate"])]
                    for c in imp["prompt_clusters"]
                ]
                or [["no clusters (run `handoff report`, which loads the sentence encoder)", "", "", ""]],
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
    ratings = summary["ratings"]
    inter = ratings["inter_rater"]
    out += [
        ("h2", "Ratings"),
        ("p", "Each row: how many answers of an arm got each number of stars."),
        (
            "table",
            (
                ["arm", *[f"{s} stars" for s in range(1, 6)], "mean"],
                [
                    [arm, *[num(d[str(s)]) for s in range(1, 6)], num(ratings["mean_stars"][arm])]
                    for arm, d in sorted(ratings["stars"].items())
                ],
            ),
        ),
        ("chart", charts.stars(ratings["stars"])),
        (
            "p",
            f"Inter-rater: {num(inter['prompts_rated_more_than_once'])} prompts were voted on more than once; "
            f"{num(inter['verdict_pairs'])} pairs of verdicts on the same prompt agree {num(inter['agreement'])} of the time.",
        ),
    ]
    out += research_blocks(summary["research"], replay)
    return [b for b in out if not (b[0] == "chart" and b[1] is None)]


def to_markdown(items: list[Block]) -> str:
    lines: list[str] = []
    for kind, value in items:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + value, ""]
        elif kind == "p":
            lines += [value, ""]
        elif kind == "list":
            lines += [f"- {item}" for item in value] + [""]
        elif kind == "table":
            head, rows = value
            lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
            lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows] + [""]
        elif kind == "chart":
            title = value.to_dict().get("title", "chart")
            lines += [f"*(chart in report.html: {title.get('text') if isinstance(title, dict) else title})*", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(str(text), quote=False))


STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#111}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #999;padding:.2rem .5rem;text-align:left}
code{font-family:ui-monospace,monospace}figure{margin:1rem 0}"""


def to_html(items: list[Block]) -> str:
    body: list[str] = []
    for kind, value in items:
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{_inline(value)}</{kind}>")
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
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Improvement report</title>'
        f"<style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
