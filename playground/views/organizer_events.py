"""Events: create (admins) or edit an event, and print its attendee QR code and link."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import streamlit as st

from db.events import EventInvalid, EventSpec, create_event, parse_tags, set_wall, timezones, update_event
from db.models import REGIONS
from db.session import session_scope
from playground.event_link import attendee_link, qr_code, wall_link
from playground.handoff.policies import POLICY_NAMES
from playground.organizer_access import REGION_NAMES, database_url, require_identity, visible_events
from playground.settings import get_settings
from playground.untrusted import inert

NEW = "➕ New event"
identity = require_identity()
url = database_url()
settings = get_settings()
st.title("Events")

if saved := st.session_state.pop("event_saved", None):
    st.success(saved)
events = {f"{e.code} · {e.name}": e for e in visible_events(url, identity)}
choices = ([NEW] if identity.is_admin else []) + list(events)
if not choices:
    st.info("Your event no longer exists; ask an admin.")
    st.stop()
if (pending := st.session_state.pop("event_pick_next", None)) in choices:
    st.session_state["event_pick"] = pending
picked = st.selectbox("Event", choices, key="event_pick")
event = events.get(picked)
current = EventSpec.of(event) if event else EventSpec(code="", name="", region="sf", city="")
zones = timezones()
suffix = event.id if event else "new"  # widget keys per event, so switching events shows that event's values
locked = not identity.is_admin  # money, routing and the code: admins only (db.events enforces it too)


def _budget(text: str) -> Decimal | None:
    if not text.strip():
        return None
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        raise EventInvalid("Budget: a number like 25 or 12.50, or empty for no limit.") from None


with st.form(f"event_form_{suffix}"):
    left, right = st.columns(2)
    code = left.text_input(
        "Code attendees type", current.code, key=f"event_code_{suffix}", disabled=locked, placeholder="SF-2026"
    )
    name = right.text_input("Name", current.name, key=f"event_name_{suffix}")
    region = left.selectbox(
        "Region",
        REGIONS,
        index=REGIONS.index(current.region),
        format_func=REGION_NAMES.get,
        key=f"event_region_{suffix}",
        disabled=locked,
    )
    city = right.text_input("City", current.city, key=f"event_city_{suffix}")
    timezone = left.selectbox(
        "Time zone",
        zones,
        index=zones.index(current.timezone) if current.timezone in zones else 0,
        key=f"event_timezone_{suffix}",
    )
    dates = right.date_input(
        "Dates", value=[d for d in (current.starts_on, current.ends_on) if d] or [], key=f"event_dates_{suffix}"
    )
    budget = left.text_input(
        "Cloud budget (empty: no limit)",
        "" if current.cloud_budget is None else str(current.cloud_budget),
        key=f"event_budget_{suffix}",
        disabled=locked,
    )
    currency = right.text_input("Currency", current.currency, key=f"event_currency_{suffix}", disabled=locked)
    policies = [None, *POLICY_NAMES]
    policy = left.selectbox(
        "Handoff policy",
        policies,
        index=policies.index(current.handoff_policy),
        format_func=lambda p: f"default ({settings.handoff_policy})" if p is None else p,
        key=f"event_policy_{suffix}",
        disabled=locked,
    )
    use_default = current.handoff_threshold is None
    threshold = right.slider(
        "Handoff threshold",
        0.0,
        1.0,
        settings.handoff_threshold if use_default else current.handoff_threshold,
        0.01,
        key=f"event_threshold_{suffix}",
        disabled=locked,
    )
    default_threshold = right.checkbox(
        "Use the default threshold", use_default, key=f"event_default_threshold_{suffix}", disabled=locked
    )
    like_tags = left.text_area(
        "Tags for a good answer (comma-separated)", ", ".join(current.like_tags), key=f"event_like_{suffix}"
    )
    dislike_tags = right.text_area(
        "Tags for a bad answer", ", ".join(current.dislike_tags), key=f"event_dislike_{suffix}"
    )
    consent = st.text_area(
        "Consent text (empty: the standard text)", current.consent_text or "", key=f"event_consent_{suffix}"
    )
    latency_fair = st.checkbox(
        "Latency-fair display (both panes start and finish showing text together)",
        current.latency_fair,
        key=f"event_latency_fair_{suffix}",
    )
    submitted = st.form_submit_button("Create event" if event is None else "Save changes", type="primary")

if submitted:
    starts_on, ends_on = (list(dates) + [None, None])[:2] if isinstance(dates, (list, tuple)) else (dates, None)
    try:
        spec = EventSpec(
            code=code,
            name=name,
            region=region,
            city=city,
            timezone=timezone,
            starts_on=starts_on,
            ends_on=ends_on or starts_on,
            cloud_budget=_budget(budget),
            currency=currency.strip() or "USD",
            handoff_policy=policy,
            handoff_threshold=None if default_threshold else float(threshold),
            like_tags=parse_tags(like_tags),
            dislike_tags=parse_tags(dislike_tags),
            consent_text=consent,
            ui_language=current.ui_language,
            latency_fair=latency_fair,
        )
        with session_scope(url) as session:
            if event is None:
                saved_event = create_event(session, spec, POLICY_NAMES, editor=identity)
            else:
                saved_event = update_event(session, event.id, spec, POLICY_NAMES, editor=identity)
            saved_event_code, saved_event_name = saved_event.code, saved_event.name
            label = f"{saved_event.code} · {saved_event.name}"
    except EventInvalid as error:
        st.error(str(error))
    else:
        st.session_state["event_saved"] = f"Saved event {saved_event_code} · {inert(saved_event_name)}."
        st.session_state["event_pick_next"] = label
        st.rerun()

if event is not None:
    st.subheader("Attendee link and QR code")
    link = attendee_link(event.code, settings)
    st.code(link, language=None)
    png = qr_code(link)
    st.image(png, width=240, caption=f"Scan to join {inert(event.code)}")
    left, right = st.columns(2)
    left.download_button("Download QR (PNG, print)", png, f"{event.code}-qr.png", "image/png", key="qr_png")
    right.download_button(
        "Download QR (SVG, posters)", qr_code(link, "svg"), f"{event.code}-qr.svg", "image/svg+xml", key="qr_svg"
    )

    st.subheader("Results wall")
    st.caption(
        "A public, read-only page for the venue screen: live vote counts, the handoff win rate and regions side by side; nothing attendees wrote."
    )
    wall_on = st.toggle("Public results wall on", value=event.wall_enabled, key=f"event_wall_{suffix}")
    if wall_on != event.wall_enabled and identity.may_see(event.id):
        with session_scope(url) as session:
            set_wall(session, event.id, wall_on)
        st.rerun()
    if wall_on:
        st.code(wall_link(event.code, settings), language=None)
