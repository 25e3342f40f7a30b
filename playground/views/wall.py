"""Results wall for the venue screen: ``/wall?event=CODE``, public and read-only, on only when an
organizer turned it on for the event.

Aggregates only (vote counts, the handoff win rate with its CI, regions side by side): no prompt,
answer, comment, tag or anything else an attendee wrote, and nothing about any one person. Labels
are in the event's interface language (``?lang=`` overrides it, for a screen in another room).
"""

from __future__ import annotations

import streamlit as st

from db.analytics import Overview, Scope, compare_regions, overview
from db.queries import wall_event
from db.session import session_scope
from feedback.stats import wilson_ci, win_rate_verdict
from playground.i18n import Translator
from playground.organizer_access import database_url
from playground.settings import get_settings

settings = get_settings()
url = database_url()
code = st.query_params.get("event") or ""
with session_scope(url) as session:
    event = wall_event(session, code) if code else None
    heading = (event.id, event.name, event.city, event.region, event.ui_language) if event else None
t = Translator(st.query_params.get("lang") or (heading[4] if heading else None))
st.set_page_config(page_title=t("wall.page_title"), initial_sidebar_state="collapsed")  # a venue screen
if heading is None:
    st.title(t("wall.page_title"))
    st.info(t("wall.unavailable"))
    st.stop()
event_id, name, city, region, _ = heading

# Large type for a screen read from across the room; styles only, no content.
st.html(
    """<style>
    .st-key-wall [data-testid="stMetricValue"] { font-size: 4.5rem; line-height: 1.1; }
    .st-key-wall [data-testid="stMetricLabel"] p { font-size: 1.6rem; }
    .st-key-wall .stMarkdown p { font-size: 1.6rem; }
    .st-key-wall h3 { font-size: 2.2rem; }
    </style>"""
)
st.text(f"{name} · {city} · {t(f'regions.{region}')}")  # organizer-written: shown as plain text


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _headline(numbers: Overview) -> None:
    votes, rate, handoff = st.columns(3)
    votes.metric(t("wall.votes"), f"{numbers.votes:,}")
    rate.metric(t("wall.win_rate"), _percent(numbers.on_win_rate))
    handoff.metric(t("wall.handed_off"), _percent(numbers.handoff_rate))
    verdict, figures = win_rate_verdict(
        numbers.on_win_rate, wilson_ci(numbers.on_wins, numbers.off_wins), numbers.decisive
    )
    st.markdown(t(f"wall.verdict.{verdict}", **figures))


@st.fragment(run_every=settings.wall_refresh_s)
def live() -> None:
    with session_scope(url) as session:
        numbers = overview(session, Scope(event_ids=(event_id,)))
        regions = compare_regions(session)
    with st.container(key="wall"):
        st.title(t("wall.heading"))
        _headline(numbers)
        st.subheader(t("wall.regions"))
        for column, (key, region_numbers) in zip(st.columns(len(regions)), regions.items(), strict=True):
            with column.container(border=True):
                st.metric(t(f"regions.{key}"), _percent(region_numbers.on_win_rate))
                interval = wilson_ci(region_numbers.on_wins, region_numbers.off_wins)
                parts = [t("wall.region_votes", votes=f"{region_numbers.votes:,}")]
                if interval:
                    parts.append(t("wall.region_ci", low=f"{interval[0]:.0%}", high=f"{interval[1]:.0%}"))
                st.markdown(" · ".join(parts))
    st.caption(t("wall.refresh", seconds=f"{settings.wall_refresh_s:g}"))


live()
