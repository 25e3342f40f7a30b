"""Attendee page: join an event, consent, prompt, compare two blind answers, vote."""

from __future__ import annotations

import uuid

import streamlit as st

from db.models import Event, Participant
from db.queries import UnknownEvent, event_by_code
from db.session import DatabaseNotMigrated, ensure_migrated, session_scope
from feedback.capture import (
    FeedbackRejected,
    VoteSubmission,
    join_event,
    record_turn,
    start_conversation,
    submit_vote,
    validate_prompt,
)
from playground.comparison import Delta, Finished, Status
from playground.runtime import comparison_for
from playground.settings import get_settings

settings = get_settings()
url = settings.resolved_database_url
state = st.session_state

try:
    ensure_migrated(url)
except DatabaseNotMigrated as error:
    st.error(str(error))
    st.stop()

st.title("Handoff Playground")


def _load_event(code: str) -> dict | None:
    try:
        with session_scope(url) as session:
            event = event_by_code(session, code)
            return {c: getattr(event, c) for c in ("id", "code", "name", "region", "city", "handoff_policy", "handoff_threshold")}
    except UnknownEvent as error:
        st.error(str(error))
        return None


# --- event entry -------------------------------------------------------------------------
if "event" not in state:
    linked = st.query_params.get("event")
    if linked and (event := _load_event(linked)):
        state.event = event
    else:
        typed = st.text_input("Event code", placeholder="e.g. SF-2026", key="event_code")
        if st.button("Join event", type="primary", key="join") and typed and (event := _load_event(typed)):
            state.event = event
            st.rerun()
        st.stop()

event = state.event
st.caption(f"{event['name']} · {event['city']} · {event['region'].upper()}")

# --- consent -----------------------------------------------------------------------------
CONSENT = (
    "**Before you start.** Your prompts, both answers, your votes and comments are stored under a "
    "random pseudonym (no name, email or IP address) and used by researchers to improve this open-weight "
    "model and its handoff. When handoff is on, your conversation (and nothing else) may be sent to a "
    "cloud model through the OpenAI API."
)
if "participant_id" not in state:
    st.info(CONSENT)
    if st.button("I agree", type="primary", key="consent_accept"):
        with session_scope(url) as session:
            participant = join_event(session, session.get(Event, event["id"]))
            state.participant_id = participant.id
        st.rerun()
    st.stop()


# --- conversation state ------------------------------------------------------------------
def _new_conversation() -> None:
    for key in ("conversation_id", "handoff_side", "turns", "history_off", "history_on", "vote_key", "voted"):
        state.pop(key, None)


if "turns" not in state:
    state.turns, state.history_off, state.history_on = [], [], []

if st.button("New comparison", key="new_comparison"):
    _new_conversation()
    st.rerun()

left, right = st.columns(2)
panes = {"a": left, "b": right}
for pane, column in panes.items():
    column.subheader(f"Answer {pane.upper()}")


def _arm_pane(arm: str) -> str:
    side = state.handoff_side
    return side if arm == "on" else ("b" if side == "a" else "a")


for turn in state.turns:
    for arm in ("off", "on"):
        with panes[_arm_pane(arm)]:
            st.chat_message("user").markdown(turn["prompt"])
            st.chat_message("assistant").markdown(turn[arm])

# --- prompt ------------------------------------------------------------------------------
prompt = st.chat_input("Ask anything…", key="prompt")
if prompt is not None:
    try:
        validate_prompt(prompt, settings.max_prompt_chars)
        if len(state.turns) >= settings.max_turns:
            raise FeedbackRejected(f"This comparison reached {settings.max_turns} turns. Start a new comparison.")
    except FeedbackRejected as error:
        st.error(str(error))
        st.stop()
    if "conversation_id" not in state:
        with session_scope(url) as session:
            participant = session.get(Participant, state.participant_id)
            conversation = start_conversation(session, participant)
            state.conversation_id, state.handoff_side = conversation.id, conversation.handoff_side
    placeholders = {}
    for arm in ("off", "on"):
        with panes[_arm_pane(arm)]:
            st.chat_message("user").markdown(prompt)
            placeholders[arm] = st.chat_message("assistant").empty()
    texts = {"off": "", "on": ""}
    comparison = comparison_for(event["handoff_policy"], event["handoff_threshold"], settings)
    finished = None
    with st.spinner("Generating both answers…"):
        for item in comparison.run(prompt, state.history_off, state.history_on):
            if isinstance(item, Delta):
                texts[item.arm] += item.text
                placeholders[item.arm].markdown(texts[item.arm])
            elif isinstance(item, Status) and not texts[item.arm]:
                placeholders[item.arm].caption(item.message)
            elif isinstance(item, Finished):
                finished = item
    assert finished is not None
    with session_scope(url) as session:
        record_turn(session, state.conversation_id, finished.record)
    decision = finished.record.decision
    state.turns.append(
        {"prompt": prompt, "off": finished.off_text, "on": finished.on_text,
         "handed_off": decision.handed_off and decision.blocked_by is None, "reason": decision.reason}
    )  # fmt: skip
    state.history_off += [{"role": "user", "content": prompt}, {"role": "assistant", "content": finished.off_text}]
    state.history_on += [{"role": "user", "content": prompt}, {"role": "assistant", "content": finished.on_text}]
    state.vote_key = uuid.uuid4().hex
    state.voted = False
    st.rerun()

# --- vote --------------------------------------------------------------------------------
if state.turns:
    identical = all(t["off"] == t["on"] for t in state.turns)
    with st.form("vote"):
        if identical:
            st.info("Both answers are identical: no handoff happened. Rate the answer instead.")
            choice = "identical"
        else:
            labels = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
            choice = st.radio("Which answer is better?", list(labels), format_func=labels.get, index=None, key="winner")
        comment = st.text_area("Comment (optional)", max_chars=settings.max_comment_chars, key="comment")
        submitted = st.form_submit_button("Submit vote", type="primary")
    if submitted:
        if choice is None:
            st.warning("Pick an answer first.")
        else:
            try:
                with session_scope(url) as session:
                    submit_vote(
                        session,
                        VoteSubmission(state.vote_key, state.conversation_id, choice, comment),
                        settings.max_comment_chars,
                    )
                state.voted = True
                st.success("Thanks, your vote is saved.")
            except FeedbackRejected as error:
                st.error(str(error))
    if state.get("voted"):
        side = state.handoff_side.upper()
        st.markdown(f"**Reveal:** answer **{side}** had handoff on; the other answer is the local model alone.")
        for number, turn in enumerate(state.turns, start=1):
            happened = "handed off to the cloud model" if turn["handed_off"] else "stayed local"
            st.markdown(f"- Turn {number}: {happened}" + (f" ({turn['reason']})" if turn["handed_off"] else ""))
