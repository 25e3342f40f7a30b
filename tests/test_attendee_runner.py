"""The background turn runner behind the attendee page: streaming, stop buttons, storage.

The event source is scripted (a generator of the comparison's own event types, paced by a gate)
so a stop lands at a known point; storage is the real capture code on a real database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from db.models import Answer, Event, Turn
from db.session import in_transaction, session_scope
from feedback.capture import join_event, record_turn, start_conversation
from feedback.records import TurnRecord
from playground.comparison import HANDOFF_NOTE, Delta, Finished, Status, TurnEvent
from playground.turn_runner import RunView, TurnRunner
from tests.db_outage import database_unavailable
from tests.factories import make_event, turn_record


def _record() -> TurnRecord:
    return turn_record(
        "Greet me",
        off_text="Hello world",
        on_text="Hello there",
        tokens_out=2,
        latency_off=20.0,
        latency_on=90.0,
        reason="low confidence",
    )


class Script:
    """Two deltas per arm; the second ones wait for ``gate`` so a test can act in between."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.closed = threading.Event()

    def __call__(self) -> Iterator[TurnEvent]:
        try:
            yield Status("on", HANDOFF_NOTE)
            yield Delta("off", "Hello ")
            yield Delta("on", "Hello ")
            self.gate.wait(30)
            yield Delta("off", "world")
            yield Delta("on", "there")
            yield Finished(_record(), "Hello world", "Hello there")
        finally:
            self.closed.set()


def _until(runner: TurnRunner, done: Callable[[RunView], bool]) -> RunView:
    deadline = time.monotonic() + 30
    while not done(view := runner.snapshot()):
        assert time.monotonic() < deadline, view
        time.sleep(0.01)
    return view


@pytest.fixture
def store(sqlite_url: str) -> Callable[[TurnRecord], int]:
    with session_scope(sqlite_url) as session:
        event = session.get(Event, make_event(sqlite_url, "R-1", "apac"))
        conversation_id = start_conversation(session, join_event(session, event)).id
    return lambda record: in_transaction(sqlite_url, lambda s: record_turn(s, conversation_id, record).id)


def _answers(url: str) -> dict[str, Answer]:
    with session_scope(url) as session:
        return {a.arm: a for a in session.scalars(select(Answer))}


def test_both_panes_stream_and_the_turn_is_stored_as_shown(sqlite_url: str, store) -> None:
    script = Script()
    runner = TurnRunner("Greet me", script, store).start()
    view = _until(runner, lambda v: v.texts == {"off": "Hello ", "on": "Hello "})
    assert view.state == "running"
    script.gate.set()
    view = _until(runner, lambda v: v.state != "running")
    assert view.state == "finished" and view.texts == {"off": "Hello world", "on": "Hello there"}
    turn = view.turn
    assert turn.notes["on"] == [HANDOFF_NOTE] and turn.handed_off
    assert turn.latency_ms == {"off": 20.0, "on": 90.0}
    assert {arm: a.text for arm, a in _answers(sqlite_url).items()} == {"off": "Hello world", "on": "Hello there"}


def test_stopping_one_pane_keeps_what_was_shown_and_marks_it_stopped(sqlite_url: str, store) -> None:
    script = Script()
    runner = TurnRunner("Greet me", script, store).start()
    _until(runner, lambda v: v.texts["off"] == "Hello ")
    runner.stop("off")
    script.gate.set()
    view = _until(runner, lambda v: v.state != "running")
    assert view.state == "finished" and view.turn.stopped == ["off"]
    assert view.turn.texts == {"off": "Hello ", "on": "Hello there"}
    answers = _answers(sqlite_url)
    assert (answers["off"].text, answers["off"].finish_reason, answers["off"].tokens_out) == ("Hello ", "stopped", None)
    assert (answers["on"].text, answers["on"].finish_reason) == ("Hello there", None)


def test_stopping_both_panes_abandons_the_turn_and_stores_nothing(sqlite_url: str, store) -> None:
    script = Script()
    runner = TurnRunner("Greet me", script, store).start()
    _until(runner, lambda v: v.texts["on"] == "Hello ")
    runner.stop("off")
    runner.stop("on")
    assert runner.snapshot().state == "cancelled"  # the page can go on at once
    script.gate.set()
    assert script.closed.wait(30)  # the comparison's generator was closed, so it can clean up
    with session_scope(sqlite_url) as session:
        assert session.scalar(select(Turn)) is None


def test_a_turn_the_database_cannot_take_is_reported_not_saved(sqlite_url: str, store) -> None:
    script = Script()
    script.gate.set()
    with database_unavailable(sqlite_url):
        runner = TurnRunner("Greet me", script, store).start()
        view = _until(runner, lambda v: v.state != "running")
    assert view.state == "not_saved" and "unavailable" in view.error
    assert view.texts == {"off": "Hello world", "on": "Hello there"}  # still on screen


def test_the_page_sleeps_until_a_pane_changes_and_wakes_at_once_when_one_does(sqlite_url: str, store) -> None:
    script = Script()
    runner = TurnRunner("Greet me", script, store).start()
    _until(runner, lambda v: v.texts == {"off": "Hello ", "on": "Hello "})  # held at the gate
    seen, view = runner.next_view(-1, timeout=30)
    started = time.monotonic()
    assert runner.next_view(seen, timeout=0.3) == (seen, view)  # nothing new: waits out the timeout
    assert time.monotonic() - started >= 0.25
    threading.Timer(0.2, script.gate.set).start()
    started = time.monotonic()
    newer, view = runner.next_view(seen, timeout=30)  # woken by the next delta, long before the timeout
    assert newer != seen and time.monotonic() - started < 10
    while view.state == "running":
        seen, view = runner.next_view(seen, timeout=30)
    assert view.state == "finished" and view.texts == {"off": "Hello world", "on": "Hello there"}
