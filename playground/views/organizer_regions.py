"""Compare regions: SF, Europe and APAC side by side on the overview's numbers (admins only)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from db.analytics import Overview, compare_regions
from db.session import session_scope
from feedback.stats import wilson_ci
from playground.organizer_access import REGION_NAMES, database_url, require_identity

require_identity(admin=True)
url = database_url()
st.title("Compare regions")


def _row(numbers: Overview) -> dict[str, object]:
    interval = wilson_ci(numbers.on_wins, numbers.off_wins)
    latency = {a.arm: a for a in numbers.latency}
    return {
        "participants": numbers.participants,
        "conversations": numbers.conversations,
        "votes": numbers.votes,
        "handoff-on win rate": numbers.on_win_rate,
        "win rate 95% CI": f"{interval[0]:.0%}–{interval[1]:.0%}" if interval else None,
        "handoff rate": numbers.handoff_rate,
        "cloud spend": float(numbers.cloud_cost),
        "cloud budget": float(numbers.cloud_budget) if numbers.cloud_budget is not None else None,
        "p50 latency off (ms)": latency["off"].p50_ms,
        "p95 latency off (ms)": latency["off"].p95_ms,
        "p50 latency on (ms)": latency["on"].p50_ms,
        "p95 latency on (ms)": latency["on"].p95_ms,
        "errors": sum(numbers.errors.values()) + sum(numbers.blocked.values()),
        "top tag": f"{numbers.top_tags[0][1]} ({numbers.top_tags[0][0]})" if numbers.top_tags else None,
        "top language": numbers.languages[0][0] if numbers.languages else None,
    }


with session_scope(url) as session:
    regions = compare_regions(session)

table = pd.DataFrame({REGION_NAMES[region]: _row(numbers) for region, numbers in regions.items()})
st.dataframe(table.astype(str).replace({"None": "–", "nan": "–"}), key="regions_table")

rates = pd.DataFrame(
    [
        {"region": REGION_NAMES[region], "win rate": numbers.on_win_rate, "low": ci[0], "high": ci[1]}
        for region, numbers in regions.items()
        if (ci := wilson_ci(numbers.on_wins, numbers.off_wins)) is not None
    ]
)
st.subheader("Handoff-on win rate with 95% CI")
if rates.empty:
    st.caption("No decisive votes yet.")
else:
    base = alt.Chart(rates).encode(y=alt.Y("region:N", title=None))
    points = base.mark_point(filled=True, size=90).encode(x=alt.X("win rate:Q", scale=alt.Scale(domain=[0, 1])))
    bars = base.mark_errorbar().encode(x="low:Q", x2="high:Q")
    rule = alt.Chart(pd.DataFrame({"x": [0.5]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
    st.altair_chart(points + bars + rule, use_container_width=True)

votes = pd.DataFrame(
    [(REGION_NAMES[region], moment, n) for region, numbers in regions.items() for moment, n in numbers.votes_over_time],
    columns=["region", "time", "votes"],
)
st.subheader("Votes over time (UTC)")
if votes.empty:
    st.caption("No votes yet.")
else:
    st.line_chart(votes, x="time", y="votes", color="region")
