"""Streamlit entry point: ``streamlit run playground/app.py`` (``handoff serve`` does this)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from playground import startup
from playground.i18n import Translator

PAGES = Path(__file__).parent / "views"

st.set_page_config(page_title="Handoff Playground", page_icon="⚖️", layout="wide")

# The first visit after start-up: draw a page now, load the services in the background, then rerun.
if not startup.ready():
    t = Translator(st.session_state.get("ui_language") or st.query_params.get("lang"))
    st.title(t("app.title"))
    st.caption(t("app.tagline"))
    with st.spinner(t("app.warming")):
        startup.wait()
    st.rerun()

from playground.organizer_access import current_identity, sign_out  # noqa: E402 - after the warm-up page
from playground.untrusted import inert  # noqa: E402

attendee = st.Page(PAGES / "attendee.py", title="Playground", icon="⚖️", default=True)
# The venue screen's results wall: public at /wall?event=CODE, not in the navigation.
wall = st.Page(PAGES / "wall.py", title="Results wall", icon="📣", url_path="wall", visibility="hidden")

# Organizer pages exist in the navigation only once someone signed in; the sign-in page and the
# overview share the /organizer address, so signing in (or out) reruns into the right one.
identity = current_identity()
if identity is None:
    organizer_pages = [
        st.Page(PAGES / "organizer_signin.py", title="Organizer sign-in", icon="🔐", url_path="organizer")
    ]
else:
    organizer_pages = [
        st.Page(PAGES / "organizer_overview.py", title="Live overview", icon="📈", url_path="organizer"),
        *([st.Page(PAGES / "organizer_regions.py", title="Compare regions", icon="🌍")] if identity.is_admin else []),
        st.Page(PAGES / "organizer_comments.py", title="Comments", icon="💬"),
        st.Page(PAGES / "organizer_events.py", title="Events", icon="🗓️"),
        st.Page(PAGES / "organizer_exports.py", title="Exports & reports", icon="📦"),
    ]
    with st.sidebar:
        st.caption(f"Signed in as **{inert(identity.username)}** ({identity.role})")
        st.button("Sign out", key="sign_out", on_click=sign_out)
navigation = st.navigation({"Playground": [attendee, wall], "Organizers": organizer_pages})
navigation.run()
