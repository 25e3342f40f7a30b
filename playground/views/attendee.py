"""Attendee page: join an event, consent, prompt, watch two blind answers stream, give feedback, reveal.

Thin on purpose: every rule lives in ``playground.attendee_session`` and ``feedback.capture``; every
string comes from the catalog (``playground.i18n``). Text is rendered as markdown, never as HTML.
"""

from __future__ import annotations

import json
import time

import streamlit as st
from sqlalchemy.exc import DBAPIError

from db.queries import UnknownEvent
from db.session import DatabaseNotMigrated, DatabaseUnavailable, ensure_migrated
from db.vocabulary import BOTH, PAIRWISE_WINNERS, PANES
from feedback.capture import PROFILE_CHOICES
from feedback.errors import FeedbackRejected
from feedback.units import format_usd, format_wh
from feedback.votes import PaneRating
from playground.attendee_session import (
    BlindComparison,
    EventView,
    give_consent,
    handoff_paused,
    leave,
    load_event,
    participant_cookie_name,
    participant_token,
    remember_language,
    returning_participant,
    reveal,
    save_feedback,
    start_turn,
    update_profile,
)
from playground.i18n import LANGUAGES, Translator, UnknownMessage
from playground.runtime import engine_ready, start_loading
from playground.settings import get_settings
from playground.turn_runner import RunView, ShownTurn
from playground.untrusted import answer_markdown, inert

settings = get_settings()
url = settings.resolved_database_url
state = st.session_state
STREAM_FRAME_S = 0.15  # the least time between two redraws of the streaming panes
STREAM_HEARTBEAT_S = 0.5  # the most time without a redraw while a turn runs (a stop click waits for one)
CATEGORIES = ("coding", "reasoning", "math", "writing", "extraction", "stem", "humanities", "roleplay")

if not state.get("schema_checked"):  # once per tab: a later outage must not hide kept feedback
    try:
        ensure_migrated(url)
    except DatabaseNotMigrated as error:
        st.error(str(error))
        st.stop()
    except DBAPIError:  # down at page load: a message, never a traceback
        st.error(Translator(state.get("ui_language"))("errors.database_unavailable"))
        st.stop()
    state.schema_checked = True


@st.cache_resource
def _warm_up() -> bool:
    """Load the model in the background once per process; the page never blocks on it."""
    start_loading(settings)
    return True


_warm_up()
# Reason-tag pills (multi-select: a toolbar) wrap onto more lines instead of scrolling past the pane's edge.
st.html(
    """<style>
    [class*="st-key-tags_"] [role="toolbar"] {
        flex-wrap: wrap; overflow: visible; mask-image: none; -webkit-mask-image: none;
    }
    </style>"""
)


def _open_event(code: str) -> str | None:
    """Load the event into this tab; returns the message to show when it can't."""
    try:
        state.event = load_event(url, code)
    except UnknownEvent as error:
        return Translator(state.get("ui_language"))("entry.unknown_code", code=inert(error.code))
    except DatabaseUnavailable as error:
        return Translator(state.get("ui_language")).error(error)
    st.query_params["event"] = state.event.code
    return None


entry_error = None
if "event" not in state and (linked := st.query_params.get("event")):
    entry_error = _open_event(linked)


def _language_changed() -> None:
    state.language_chosen = True
    if state.get("participant_id"):
        try:
            remember_language(url, state.participant_id, state.ui_language)
        except DatabaseUnavailable:
            pass  # only a preference: the page language switches anyway


state.setdefault("ui_language", "en")
if "event" in state and not state.get("language_applied"):
    # The event's interface language is the default until the attendee picks another one.
    if not state.get("language_chosen"):
        state.ui_language = state.event.ui_language
    state.language_applied = True
heading, picker = st.columns([4, 1], vertical_alignment="bottom")
picker.selectbox(
    "language",
    list(LANGUAGES),
    format_func=LANGUAGES.get,
    key="ui_language",
    on_change=_language_changed,
    label_visibility="collapsed",
)
t = Translator(state.ui_language)
heading.title(t("app.title"))
st.caption(t("app.tagline"))

# --- event entry ---------------------------------------------------------------------------
if "event" not in state:
    typed = st.text_input(t("entry.code_label"), placeholder=t("entry.code_placeholder"), key="event_code")
    if st.button(t("entry.join"), type="primary", key="join"):
        entry_error = _open_event(typed) if typed.strip() else t("entry.empty_code")
        if entry_error is None:
            st.rerun()
    if entry_error:
        st.error(entry_error)
    st.stop()

event: EventView = state.event
st.caption(t("entry.where", name=inert(event.name), city=inert(event.city), region=t(f"regions.{event.region}")))
# A notice that comes and goes between two runs of one turn (the budget runs out, the model finishes loading)
# keeps one slot on the page either way: Streamlit places elements by position, and a long streaming run that
# draws one element fewer above the panes drew them one place higher, leaving the previous run's panes (and
# whatever followed them) on the page below, greyed out, until the turn ended.
paused_notice = st.empty()
try:
    if handoff_paused(url, event.id):
        paused_notice.warning(t("prompt.handoff_paused"))
except DatabaseUnavailable:
    pass  # the budget check is informational; feedback handling reports outages itself


def _samples(clickable: bool) -> tuple[str | None, str | None]:
    """Sample tasks by category; returns (prompt, category) when one was clicked."""
    category = st.pills(t("prompt.samples"), CATEGORIES, format_func=lambda c: t(f"categories.{c}"), key="category")
    if category is None:
        return None, None
    for index, sample in enumerate(t.list(f"samples.{category}")):
        if clickable and st.button(sample, key=f"sample_{index}", icon=":material/lightbulb:"):
            return sample, category
        if not clickable:
            st.markdown(f"- {sample}")
    return None, category


# --- a returning participant (reload, new tab): the signed cookie set after consent ----------------
cookie_name = participant_cookie_name(event)
if not state.get("participant_id") and not state.get("cookie_checked"):
    state.cookie_checked = True
    try:
        returning = returning_participant(url, settings, event, st.context.cookies.get(cookie_name))
    except DatabaseUnavailable:
        returning = None  # consent is asked again; a new participant is only made after consent
    if returning is not None:
        state.participant_id, state.consent = returning, "accepted"

# --- consent -------------------------------------------------------------------------------
if not state.get("participant_id"):
    if state.get("consent") == "declined":
        st.warning(t("consent.declined"))
        if st.button(t("consent.review"), key="consent_review"):
            state.consent = None
            st.rerun()
        st.subheader(t("consent.look_around"))
        _samples(clickable=False)
        st.chat_input(t("prompt.declined"), key="prompt", disabled=True)
        st.stop()
    with st.container(border=True):
        st.subheader(t("consent.heading"))
        st.markdown(answer_markdown(event.consent_text or t("consent.default_text")))
        accept, decline = st.columns(2)
        if accept.button(t("consent.accept"), type="primary", key="consent_accept", width="stretch"):
            try:
                state.participant_id = give_consent(url, event, t.language)
                state.consent = "accepted"
                st.rerun()
            except DatabaseUnavailable as error:
                st.error(t.error(error))
        if decline.button(t("consent.decline"), key="consent_decline", width="stretch"):
            state.consent = "declined"
            st.rerun()
    st.stop()

if not state.get("participant_token"):
    try:
        state.participant_token = participant_token(url, settings, event, state.participant_id)
    except DatabaseUnavailable:
        pass  # only a convenience for a later reload: tried again on the next run
if state.get("participant_token") and st.context.cookies.get(cookie_name) != state.participant_token:
    # A script, not a Set-Cookie header: Streamlit pages can't send headers. Only the signed token
    # is written; the signing secret stays in the settings.
    cookie = f"{cookie_name}={state.participant_token}; path=/; max-age={3 * 86400}; samesite=strict"
    st.html(
        f"<script>document.cookie = {json.dumps(cookie)}"
        " + (location.protocol === 'https:' ? '; secure' : '');</script>",
        unsafe_allow_javascript=True,
    )

# --- optional profile ------------------------------------------------------------------------
if event.ask_profile and not state.get("profile_done"):
    with st.expander(t("profile.heading"), expanded=not state.get("comparison")):
        st.caption(t("profile.intro"))
        labels = {"role": "roles", "experience": "experience", "language": "languages"}
        for name, choices in PROFILE_CHOICES.items():
            st.selectbox(
                t(f"profile.{name}"),
                choices,
                index=None,
                key=f"profile_{name}",
                format_func=lambda value, section=labels[name]: t(f"{section}.{value}"),
            )
        save, skip = st.columns(2)
        if save.button(t("profile.save"), key="profile_save", width="stretch"):
            try:
                update_profile(url, state.participant_id, {n: state.get(f"profile_{n}") for n in PROFILE_CHOICES})
                state.profile_done = True
                st.toast(t("profile.saved"))
                st.rerun()
            except (FeedbackRejected, DatabaseUnavailable) as error:
                st.error(t.error(error))
        if skip.button(t("profile.skip"), key="profile_skip", width="stretch"):
            state.profile_done = True
            st.rerun()

# --- the comparison --------------------------------------------------------------------------
comparison: BlindComparison = state.setdefault("comparison", BlindComparison())
runner = comparison.runner
ended: tuple[str, RunView] | None = None  # (prompt, view) of a turn that ended with no round: shown once below
if runner is not None and (view := runner.snapshot()).state != "running":
    # Taken here, before any widget is drawn, so this run draws the prompt box and "New comparison" enabled:
    # the turn ended between two runs (a stop click's callback stopped the second pane, or the streaming run
    # below saw it end and reran).
    comparison.runner = None
    if view.state == "finished" and view.turn is not None:
        comparison.add_turn(view.turn)
    else:
        ended = (runner.prompt, view)
    runner = None
running = runner is not None

toolbar, counter = st.columns([1, 1], vertical_alignment="center")
if toolbar.button(t("prompt.new"), key="new_comparison", help=t("prompt.new_help"), disabled=running):
    try:
        leave(url, comparison)
    except DatabaseUnavailable:
        pass  # the votes stay editable in the database; nothing is lost
    state.comparison = BlindComparison()
    st.rerun()
if comparison.turns:
    counter.caption(t("prompt.turn_counter", turn=len(comparison.turns), max_turns=settings.max_turns))
warming_notice = st.empty()  # one slot either way (see paused_notice)
if not engine_ready(settings):
    warming_notice.caption(t("prompt.warming"))

at_limit = len(comparison.turns) >= settings.max_turns
prompt = st.chat_input(
    t("prompt.placeholder"), key="prompt", disabled=running or comparison.revealed or at_limit
)  # no max_chars: the browser would cut a pasted prompt silently; the limit's message says what to do
category = state.get("category")
samples = st.empty()  # one slot either way (see paused_notice)
if not comparison.turns and not running:
    with samples.container():
        sample, category = _samples(clickable=True)
    prompt = prompt or sample
if at_limit and not comparison.revealed:
    st.info(t("prompt.turn_limit", max_turns=settings.max_turns))
if comparison.revealed:
    st.info(t("prompt.revealed"))

if prompt is not None and not running:
    try:
        start_turn(url, settings, event, state.participant_id, comparison, prompt, category)
    except FeedbackRejected as error:
        st.error(t.error(error))
    except DatabaseUnavailable as error:
        st.error(t.error(error))
    else:
        # Stream in a run that draws the page of a running turn from the top: this run drew the prompt box and
        # "New comparison" enabled and the sample tasks; streaming here left those enabled, and the first rerun
        # (a stop click) drew the panes higher up, with this run's panes left below them, stale, until the end.
        st.rerun()

columns = dict(zip(PANES, st.columns(2), strict=True))
for pane, column in columns.items():
    column.subheader(t("pane.answer", pane=pane.upper()))
    for turn in comparison.turns:
        arm = comparison.arm_of(pane)
        with column:
            st.chat_message("user").markdown(inert(turn.prompt))
            with st.chat_message("assistant"):
                st.markdown(answer_markdown(turn.texts[arm]))
                if arm in turn.stopped:
                    st.caption(t("pane.stopped"))
                if comparison.revealed and turn.notes[arm]:
                    notes = "; ".join(t(note.key, **note.params) for note in turn.notes[arm])
                    st.caption(t("reveal.notes", pane=pane.upper(), notes=inert(notes)))

# --- a turn that ended without a round to vote on (both panes stopped, not saved, failed) --------------
if ended is not None:
    ended_prompt, ended_view = ended
    for pane, column in columns.items():
        with column:
            st.chat_message("user").markdown(inert(ended_prompt))
            st.chat_message("assistant").markdown(answer_markdown(ended_view.texts[comparison.arm_of(pane)]))
    if ended_view.state == "cancelled":
        st.info(t("pane.cancelled"))
    elif ended_view.state == "not_saved":
        st.error(t("pane.turn_not_saved"))
    else:
        st.error(t("pane.turn_failed"))  # the cause is in the server log, never on the page
    st.stop()

# --- streaming both panes at once --------------------------------------------------------------
if running and runner is not None:
    live = {}
    stopped = set(runner.snapshot().stopped)
    for pane, column in columns.items():
        arm = comparison.arm_of(pane)
        with column:
            # A callback, so the stop is applied before the next run draws anything: when it stops the
            # second pane, that run already draws the prompt box enabled.
            st.button(
                t("pane.stop", pane=pane.upper()),
                key=f"stop_{pane}",
                icon=":material/stop_circle:",
                on_click=runner.stop,
                args=(arm,),
                disabled=arm in stopped,
            )
            st.chat_message("user").markdown(inert(runner.prompt))
            with st.chat_message("assistant"):
                live[arm] = st.empty()
                if arm in stopped:
                    st.caption(t("pane.stopped"))
    shown: dict[str, str] = {}

    def _draw(texts: dict[str, str]) -> bool:
        """Redraw the panes whose text changed (each redraw sends the pane's whole answer); True if any."""
        drew = False
        for arm, placeholder in live.items():
            text = texts[arm] or f"_{t('pane.thinking')}_"
            if text != shown.get(arm):
                placeholder.markdown(answer_markdown(text))
                shown[arm], drew = text, True
        return drew

    def _heartbeat() -> None:
        """Redraw the shorter pane as it is: a click (a stop button) reaches this run only when it draws."""
        arm = min(shown, key=lambda a: len(shown[a]))
        live[arm].markdown(answer_markdown(shown[arm]))

    with st.spinner(t("pane.working")):
        # Woken by the runner when a pane's text changes, not by polling; then a pause of STREAM_FRAME_S gathers
        # the next tokens into one redraw, so the page process and the browser draw a few frames a second
        # instead of once per token and pane, beside the decoding loop in the same process.
        seen, drawn_at = -1, time.monotonic()
        while True:
            seen, view = runner.next_view(seen, timeout=STREAM_HEARTBEAT_S)
            if view.state != "running":
                break
            if _draw(view.texts):
                drawn_at = time.monotonic()
                time.sleep(STREAM_FRAME_S)
            elif time.monotonic() - drawn_at >= STREAM_HEARTBEAT_S:
                _heartbeat()
                drawn_at = time.monotonic()
    st.rerun()  # the next run takes the ended turn (above): its round to vote on, or why there is none


# --- feedback, editable until the next prompt --------------------------------------------------
def _submit(submission) -> None:  # noqa: ANN001 - a VoteSubmission
    try:
        save_feedback(url, settings, event, submission)
    except FeedbackRejected as error:
        st.error(t.error(error))
    except DatabaseUnavailable:
        comparison.pending = submission
    else:
        comparison.saved, comparison.pending = True, None
        st.rerun()  # redraw with the saved state: "Update feedback", the reveal button


latest = comparison.latest
if latest is not None and not comparison.revealed:
    panes_rated = (BOTH,) if comparison.identical else PANES
    key = comparison.feedback_key  # one set of widgets per round (see BlindComparison.feedback_key)

    def _tag_label(tag: str) -> str:
        return ("👍 " if tag in event.like_tags else "👎 ") + inert(t.label("tags", tag))

    for pane in panes_rated:
        column = st.container() if pane == BOTH else columns[pane]
        with column:
            if pane == BOTH:
                st.info(t("feedback.identical"))
            st.caption(t("feedback.stars_both") if pane == BOTH else t("feedback.stars", pane=pane.upper()))
            st.feedback("stars", key=key(f"stars_{pane}"))
            st.pills(
                t("feedback.tags_both") if pane == BOTH else t("feedback.tags", pane=pane.upper()),
                event.tags,
                selection_mode="multi",
                format_func=_tag_label,
                key=key(f"tags_{pane}"),
            )
    st.subheader(t("feedback.heading"))
    if not comparison.identical:
        st.segmented_control(
            t("feedback.which"), PAIRWISE_WINNERS, format_func=lambda c: t(f"feedback.{c}"), key=key("winner")
        )
    st.text_area(
        t("feedback.comment"), key=key("comment"), help=t("feedback.comment_help", max_chars=settings.max_comment_chars)
    )
    label = t("feedback.update") if comparison.saved else t("feedback.save")
    if st.button(label, type="primary", key="save_feedback"):
        winner = "identical" if comparison.identical else state.get(key("winner"))
        ratings = {
            pane: PaneRating(
                None if state.get(key(f"stars_{pane}")) is None else state[key(f"stars_{pane}")] + 1,
                list(state.get(key(f"tags_{pane}")) or []),
            )
            for pane in panes_rated
        }
        if winner is None:
            st.warning(t("feedback.pick_winner"))
        elif winner == "identical" and ratings[BOTH].stars is None:
            st.warning(t("feedback.nothing"))
        else:
            _submit(comparison.submission(winner, state.get(key("comment")), ratings))
    elif comparison.pending is not None:
        _submit(comparison.pending)  # kept feedback is retried on every rerun until it is saved
    if comparison.pending is not None:
        st.warning(t("feedback.not_saved"))
        st.button(t("feedback.retry"), key="retry_feedback")  # a click reruns, and a rerun retries
    elif comparison.saved:
        st.success(t("feedback.saved"))
        if st.button(t("reveal.button"), key="reveal", help=t("reveal.help")):
            try:
                reveal(url, comparison)
                st.rerun()
            except DatabaseUnavailable as error:
                st.error(t.error(error))
    else:
        st.caption(t("reveal.need_vote"))

# --- the reveal ------------------------------------------------------------------------------
if comparison.revealed:
    st.subheader(t("reveal.heading"))
    st.markdown(t("reveal.sides", on=comparison.pane_of("on").upper(), off=comparison.pane_of("off").upper()))

    def _seconds(ms: float | None) -> str:
        return t("reveal.unknown") if ms is None else t("reveal.seconds", value=ms / 1000)

    def _why(policy: str | None) -> str:
        """One plain sentence for the policy's decision; its numbers follow in brackets."""
        try:
            return t(f"reveal.why.{policy}")
        except UnknownMessage:
            return t("reveal.why.other")

    def _energy(turn: ShownTurn, arm: str) -> str:
        """This arm's estimated energy and cloud cost; a cloud answer also counts the local draft before it."""
        wh, cost = turn.energy_wh.get(arm), turn.cloud_cost.get(arm)
        if wh is None:
            return t("reveal.unknown")
        if cost is None:
            return t("reveal.energy_local", wh=format_wh(wh))
        return t(
            "reveal.energy_cloud", wh=format_wh(wh + (turn.energy_wh.get("off") or 0.0)), cost=format_usd(float(cost))
        )

    for number, turn in enumerate(comparison.turns, start=1):
        if turn.handed_off:
            happened = t("reveal.handed_off")
        elif turn.blocked_by:
            happened = t("reveal.blocked", blocked_by=inert(turn.blocked_by))
        else:
            happened = t("reveal.stayed_local")
        latency = t("reveal.latency", **{p: _seconds(turn.latency_ms[comparison.arm_of(p)]) for p in PANES})
        why = (
            f" · {t('reveal.reason', sentence=_why(turn.policy), reason=inert(turn.reason))}"
            if turn.reason and turn.handed_off
            else ""
        )
        st.markdown(f"- **{t('reveal.turn', turn=number)}**: {happened}{why} · {latency}")
        if any(wh is not None for wh in turn.energy_wh.values()):
            energy = t("reveal.energy", **{p: _energy(turn, comparison.arm_of(p)) for p in PANES})
            st.caption(energy, help=t("reveal.energy_help"))
