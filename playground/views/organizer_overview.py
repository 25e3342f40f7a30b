"""Live overview: the event's numbers, refreshed every few seconds from cheap SQL aggregates."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from db.analytics import BUCKETS, Overview, overview
from db.session import session_scope
from feedback.stats import wilson_ci
from feedback.units import format_ms, format_usd, format_wh
from playground.organizer_access import current_identity, database_url, require_identity, scope_picker
from playground.settings import get_settings

identity = require_identity()
url = database_url()
settings = get_settings()

st.title("Live overview")
picked, bucket_column = st.columns([3, 1])
with picked:
    scope, label = scope_picker(url, identity, key="overview_scope")
with bucket_column:
    bucket = st.selectbox("Votes per", BUCKETS, index=BUCKETS.index("hour"), key="overview_bucket")


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _headline(numbers: Overview) -> None:
    columns = st.columns(6)
    columns[0].metric("Participants", f"{numbers.participants:,}")
    columns[1].metric("Conversations", f"{numbers.conversations:,}")
    columns[2].metric("Votes", f"{numbers.votes:,}")
    interval = wilson_ci(numbers.on_wins, numbers.off_wins)
    columns[3].metric(
        "Handoff-on win rate",
        _percent(numbers.on_win_rate),
        help="Share of decisive votes (on vs off) won by the handoff arm; ties and 'both bad' left out.",
    )
    if interval:
        columns[3].caption(f"95% CI {interval[0]:.0%}–{interval[1]:.0%} over {numbers.decisive:,} votes")
    columns[4].metric("Handoff rate", _percent(numbers.handoff_rate), help="Turns the policy handed off.")
    columns[4].caption(f"{numbers.reached_cloud:,} of {numbers.turns:,} turns answered by the cloud")
    columns[5].metric("Cloud spend", format_usd(float(numbers.cloud_cost)))
    if numbers.cloud_budget is not None:
        columns[5].caption(f"of {format_usd(float(numbers.cloud_budget))} budget")
    if numbers.budget_used is not None:
        columns[5].progress(min(numbers.budget_used, 1.0), text=f"{numbers.budget_used:.0%} of budget")
    st.caption(_energy_line(numbers))


def _energy_line(numbers: Overview) -> str:
    """ "handoff used N Wh and $X per 1,000 prompts", against the local model alone (estimates)."""
    energy = numbers.energy
    if not energy.prompts:
        return "Energy: no estimates yet."
    return (
        f"Per 1,000 prompts, handoff used {format_wh(energy.per_1000(energy.handoff_wh))} and "
        f"{format_usd(energy.per_1000(energy.handoff_cost))}; the local model alone used "
        f"{format_wh(energy.per_1000(energy.local_wh))} (estimates over {energy.prompts:,} prompts: "
        "EcoLogits for the cloud, measured time × device power for the local model)."
    )


def _charts(numbers: Overview) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Votes over time (UTC)")
        if numbers.votes_over_time:
            st.bar_chart(pd.DataFrame(numbers.votes_over_time, columns=["time", "votes"]), x="time", y="votes")
        else:
            st.caption("No votes yet.")
        st.subheader("Verdicts")
        verdicts = pd.DataFrame(list(numbers.verdicts.items()), columns=["verdict", "votes"])
        st.bar_chart(verdicts, x="verdict", y="votes", horizontal=True)
    with right:
        st.subheader("Latency per arm")
        st.dataframe(
            pd.DataFrame(
                [
                    {"arm": a.arm, "answers": f"{a.answers:,}", "p50": format_ms(a.p50_ms), "p95": format_ms(a.p95_ms)}
                    for a in numbers.latency
                ]
            ),
            hide_index=True,
        )
        st.subheader("Top reason tags")
        if numbers.top_tags:
            tags = pd.DataFrame(numbers.top_tags, columns=["arm", "tag", "count"])
            st.bar_chart(tags, x="tag", y="count", color="arm", horizontal=True)
        else:
            st.caption("No tags yet.")
        st.subheader("Languages")
        st.bar_chart(pd.DataFrame(numbers.languages, columns=["language", "turns"]), x="language", y="turns")
    st.subheader("Errors")
    problems = {**{f"cloud blocked: {k}": v for k, v in numbers.blocked.items()}, **numbers.errors}
    if problems:
        st.dataframe(pd.DataFrame(list(problems.items()), columns=["what", "count"]), hide_index=True)
    else:
        st.caption("No errors.")


@st.fragment(run_every=settings.organizer_refresh_s)
def live() -> None:
    if current_identity() is None:  # the sign-in expired while the page was open
        st.rerun(scope="app")
    with session_scope(url) as session:
        numbers = overview(session, scope, bucket)
    st.caption(f"{label} · refreshed every {settings.organizer_refresh_s:g} s")
    _headline(numbers)
    _charts(numbers)


live()
