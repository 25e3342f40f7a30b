"""Organizer sign-in: username and password (the bootstrap admin's password comes from settings)."""

from __future__ import annotations

import streamlit as st

from playground.auth import SignInRefused, attempt_sign_in
from playground.organizer_access import STATE_KEY, database_url
from playground.settings import get_settings

settings = get_settings()
url = database_url()
st.title("Organizer sign-in")
if notice := st.session_state.pop("organizer_notice", None):
    st.warning(notice)
st.caption("Live numbers, comments, events and exports are for event organizers only.")

with st.form("sign_in", clear_on_submit=True):  # the password leaves the widget state at once
    username = st.text_input("Username", key="username", autocomplete="username")
    password = st.text_input("Password", type="password", key="password", autocomplete="current-password")
    submitted = st.form_submit_button("Sign in", type="primary")

if submitted:
    try:
        st.session_state[STATE_KEY] = attempt_sign_in(url, username, password, settings)
    except SignInRefused as error:
        st.error(str(error))
    else:
        st.rerun()
