"""Results wall for the venue screen: ``/wall?event=CODE``, public and read-only, on only when an
organizer turned it on for the event.

Aggregates only (vote counts, the handoff win rate with its CI, regions side by side): no prompt,
answer, comment, tag or anything else an attendee wrote, and nothing about any one person.
"""

from __future__ import annotations

import streamlit as st

from db.analytics import Overview, Scope, compare_regions, overview
from db.queries import wall_event
from db.session import session_scope
from feedback.stats import wilson_ci, win_rate_in_words
from playground.organizer_access import REGION_NAMES, database_url
from playground.settings import get_settings

st.set_page_config(page_title="Results wall", initial_sidebar_state="collapsed")  # a venue screen: content only
settings = get_settings()
url = database_url()
code = st.query_params.get("event") or ""
with session_scope(url) as session:
    event = wall_event(session, code) if code else None
    heading = (event.id, event.name, event.city, event.region) if event else None
if heading is None:
    st.title("Results wall")
    st.info("This results wall is not available: check the address, or ask the organizers to turn it on.")
    st.stop()
event_id, name, city, region = heading

# Large type for a screen read from across the room; styles only, no content.
st.html(
    """<style>
    .st-key-wall [data-testid="stMetricValue"] { font-size: 4.5rem; line-height: 1.1; }
    .st-key-wall [data-testid="stMetricLabel"] p { font-size: 1.6rem; }
    .st-key-wall .stMarkdown p { font-size: 1.6rem; }
    .st-key-wall h3 { font-size: 2.2rem; }
    </style>"""
)
st.text(f"{name} · {city} · {REGION_NAMES[region]}")  # organizer-written: shown as plain text


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _headline(numbers: Overview) -> None:
    votes, rate, handoff = st.columns(3)
    votes.metric("Votes", f"{numbers.votes:,}")
    rate.metric("Handoff win rate", _percent(numbers.on_win_rate))
    handoff.metric("Prompts handed off", _percent(numbers.handoff_rate))
    st.markdown(win_rate_in_words(numbers.on_win_rate, wilson_ci(numbers.on_wins, numbers.off_wins), numbers.decisive))


@st.fragment(run_every=settings.wall_refresh_s)
def live() -> None:
    with session_scope(url) as session:
        numbers = overview(session, Scope(event_ids=(event_id,)))
        regions = compare_regions(session)
    with st.container(key="wall"):
        st.title("Does handoff help? Live results")
        _headline(numbers)
        st.subheader("Regions side by side")
        for column, (key, region_numbers) in zip(st.columns(len(regions)), regions.items(), strict=True):
            with column.container(border=True):
                st.metric(REGION_NAMES[key], _percent(region_numbers.on_win_rate))
                interval = wilson_ci(region_numbers.on_wins, region_numbers.off_wins)
                st.markdown(
                    f"{region_numbers.votes:,} votes"
                    + (f" · 95% CI {interval[0]:.0%}–{interval[1]:.0%}" if interval else "")
                )
    st.caption(f"Refreshes every {settings.wall_refresh_s:g} s")


live()
