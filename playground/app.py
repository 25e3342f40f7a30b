"""Streamlit entry point: ``streamlit run playground/app.py`` (``handoff serve`` does this)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "pages"

st.set_page_config(page_title="Handoff Playground", page_icon="⚖️", layout="wide")
navigation = st.navigation([st.Page(PAGES / "attendee.py", title="Playground", icon="⚖️", default=True)])
navigation.run()
