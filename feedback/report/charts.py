"""Report charts: Altair (Vega-Lite) specs rendered to inline SVG with vl-convert, so the HTML opens
offline. Each chart carries direct text labels and shapes/dashes, so it reads without colour."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import vl_convert as vlc


def to_svg(chart: alt.TopLevelMixin) -> str:
    return vlc.vegalite_to_svg(chart.to_json())


def win_rates(segments: dict[str, dict[str, Any]], title: str) -> alt.LayerChart | None:
    rows = [
        {
            "segment": k,
            "win_rate": v["handoff_on_win_rate"],
            "low": v["ci95"][0],
            "high": v["ci95"][1],
            "label": f"{v['handoff_on_win_rate']:.0%} (n={v['decided']}{', small' if v['small'] else ''})",
        }
        for k, v in segments.items()
        if v["ci95"]
    ]
    if not rows:
        return None
    data = pd.DataFrame(rows)
    base = alt.Chart(data).encode(y=alt.Y("segment:N", title=None, sort="-x"))
    bars = base.mark_bar(color="#4c78a8", height={"band": 0.7}).encode(
        x=alt.X("win_rate:Q", title="handoff win rate", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"))
    )
    ci = base.mark_rule(strokeWidth=2, color="black").encode(x="low:Q", x2="high:Q")
    labels = base.mark_text(align="left", dx=4, color="black").encode(x="high:Q", text="label:N")
    even = alt.Chart(pd.DataFrame({"x": [0.5]})).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
    return (
        (bars + ci + labels + even)
        .properties(title=title, width=560, height=alt.Step(34))
        .configure_axis(labelFontSize=13, titleFontSize=13)
        .configure_title(fontSize=16, anchor="start")
    )


def replay_curve(curve: list[dict[str, Any]], recommended: float | None) -> alt.LayerChart | None:
    if not curve:
        return None
    data = pd.DataFrame(curve).melt(id_vars="threshold", value_vars=["net_gain", "handoff_rate"], var_name="measure")
    lines = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("threshold:Q", title="threshold"),
            y=alt.Y("value:Q", title="quality gain per vote / handoff rate"),
            strokeDash=alt.StrokeDash("measure:N", title=None),
            shape=alt.Shape("measure:N", title=None),
        )
    )
    chart = lines
    if recommended is not None:
        rule = alt.Chart(pd.DataFrame({"t": [recommended], "label": [f"recommended {recommended:g}"]}))
        chart = (
            lines
            + rule.mark_rule(color="black").encode(x="t:Q")
            + rule.mark_text(align="left", dx=4, dy=-80, color="black").encode(x="t:Q", text="label:N")
        )
    return chart.properties(title="Replay: estimated quality vs handoff rate across thresholds", width=420)


def stars(distribution: dict[str, dict[str, int]]) -> alt.Chart | None:
    rows = [{"arm": arm, "stars": int(s), "votes": n} for arm, d in distribution.items() for s, n in d.items()]
    if not rows:
        return None
    base = alt.Chart(pd.DataFrame(rows)).encode(x=alt.X("stars:O", title="stars"), y=alt.Y("votes:Q", title="ratings"))
    chart = base.mark_bar(color="#4c78a8") + base.mark_text(dy=-6, color="black").encode(text="votes:Q")
    return (
        chart.properties(width=180, height=160)
        .facet(column=alt.Column("arm:N", title="arm"))
        .properties(title="Star distribution per arm")
    )


def leaderboard(rows: list[dict[str, Any]]) -> alt.LayerChart | None:
    if not rows:
        return None
    data = pd.DataFrame(rows)
    base = alt.Chart(data).encode(y=alt.Y("arm:N", sort="-x", title=None, axis=alt.Axis(labelLimit=420)))
    points = base.mark_point(filled=True, size=80, color="black").encode(
        x=alt.X("rating:Q", title="Bradley-Terry rating (95% CI)", scale=alt.Scale(zero=False))
    )
    ci = base.mark_rule(strokeWidth=2, color="black").encode(x="lower:Q", x2="upper:Q")
    return (ci + points).properties(title="Arms leaderboard", width=420)


def energy(summary: dict[str, Any]) -> alt.LayerChart | None:
    """Energy per 1,000 prompts for each arm (estimates), labelled with the value."""
    if summary.get("local_wh_per_1000_prompts") is None:
        return None
    rows = [
        {"arm": "local model alone", "wh": summary["local_wh_per_1000_prompts"]},
        {"arm": "with handoff", "wh": summary["handoff_wh_per_1000_prompts"]},
    ]
    base = alt.Chart(pd.DataFrame(rows)).encode(y=alt.Y("arm:N", title=None, sort=None))
    bars = base.mark_bar(color="#4c78a8", height={"band": 0.6}).encode(x=alt.X("wh:Q", title="Wh per 1,000 prompts"))
    labels = base.mark_text(align="left", dx=4, color="black").encode(x="wh:Q", text=alt.Text("wh:Q", format=",.1f"))
    return (bars + labels).properties(title="Estimated energy per 1,000 prompts", width=560, height=alt.Step(40))
