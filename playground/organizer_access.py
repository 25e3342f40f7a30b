"""Streamlit glue for the organizer pages: who is signed in, sign-out, and which events they look at.

The rules (hashing, lock-out, expiry, roles) live in ``playground.auth``; this module only keeps the
``Identity`` in the session and stops a page for anyone who isn't signed in (or whose sign-in expired).
"""

from __future__ import annotations

import streamlit as st
from sqlalchemy.exc import DBAPIError

from db.analytics import Scope
from db.models import REGIONS, Event
from db.queries import list_events
from db.session import DatabaseNotMigrated, ensure_migrated, session_scope
from playground.auth import Identity, still_valid
from playground.settings import get_settings

STATE_KEY = "organizer"
REGION_NAMES = {"sf": "San Francisco", "europe": "Europe", "apac": "APAC"}


DATABASE_DOWN = "The database can't be reached right now. Try again in a minute; nothing was changed."


def database_url() -> str:
    """The configured database, or a stopped page saying which command migrates it (or that it is down)."""
    url = get_settings().resolved_database_url
    try:
        ensure_migrated(url)
    except DatabaseNotMigrated as error:
        st.error(str(error))
        st.stop()
    except DBAPIError:
        st.error(DATABASE_DOWN)
        st.stop()
    return url


def current_identity() -> Identity | None:
    """The signed-in organizer, or None; an expired sign-in is dropped with a notice."""
    identity: Identity | None = st.session_state.get(STATE_KEY)
    if identity is not None and identity.expired():
        del st.session_state[STATE_KEY]
        st.session_state["organizer_notice"] = "Your organizer sign-in expired; sign in again."
        return None
    if identity is not None:
        try:
            with session_scope(get_settings().resolved_database_url) as session:
                valid = still_valid(session, identity)
        except DBAPIError:
            st.error(DATABASE_DOWN)
            st.stop()
        if not valid:  # password, role or event changed, or the account was removed, since this sign-in
            del st.session_state[STATE_KEY]
            st.session_state["organizer_notice"] = "Your organizer account changed; sign in again."
            return None
    return identity


def sign_out() -> None:
    st.session_state.pop(STATE_KEY, None)


def require_identity(admin: bool = False) -> Identity:
    """Stop the page unless an organizer (or, with ``admin``, an admin) is signed in."""
    identity = current_identity()
    if identity is None:
        st.error("Sign in as an organizer to see this page.")
        st.stop()
    if admin and not identity.is_admin:
        st.error("Only admins can see this page.")
        st.stop()
    return identity


def allowed_event_ids(identity: Identity) -> tuple[int, ...] | None:
    """None for an admin (every event), else the organizer's one event."""
    return None if identity.is_admin else (identity.event_id,)  # type: ignore[return-value]


def visible_events(url: str, identity: Identity) -> list[Event]:
    with session_scope(url) as session:
        return [e for e in list_events(session) if identity.may_see(e.id)]


def scope_picker(url: str, identity: Identity, key: str) -> tuple[Scope, str]:
    """A selectbox of the scopes this organizer may look at: every event, a region, one event."""
    events = visible_events(url, identity)
    options: dict[str, Scope] = {}
    if identity.is_admin:
        options["All events"] = Scope()
        for region in REGIONS:
            options[f"Region: {REGION_NAMES[region]}"] = Scope(region=region)
    for event in events:
        options[f"Event: {event.code} · {event.name}"] = Scope(event_ids=(event.id,))
    if not options:
        st.info("Your event no longer exists; ask an admin.")
        st.stop()
    label = st.selectbox("Show", list(options), key=key)
    return options[label], label
