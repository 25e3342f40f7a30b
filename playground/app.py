"""Streamlit entry point: ``streamlit run playground/app.py`` (``handoff serve`` does this)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from playground.organizer_access import current_identity, sign_out
from playground.untrusted import inert

PAGES = Path(__file__).parent / "views"

st.set_page_config(page_title="Handoff Playground", page_icon="⚖️", layout="wide")
attendee = st.Page(PAGES / "attendee.py", title="Playground", icon="⚖️", default=True)

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
navigation = st.navigation({"Playground": [attendee], "Organizers": organizer_pages})
navigation.run()
