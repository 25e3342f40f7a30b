"""Latency-fair display: both panes start and finish showing text together; each vote stores its display."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from sqlalchemy import select

from db.models import Event, Vote
from db.session import in_transaction, session_scope
from feedback.capture import join_event, record_turn, start_conversation
from feedback.votes import save_vote
from playground.attendee_session import BlindComparison
from playground.comparison import Delta, Finished, TurnEvent
from playground.turn_runner import TurnRunner
from tests.test_attendee_runner import _record, _until


class FastLocal:
    """The local pane streams its whole answer before the cloud pane has sent anything."""

    def __init__(self) -> None:
        self.local_done = threading.Event()
        self.gate = threading.Event()

    def __call__(self) -> Iterator[TurnEvent]:
        yield Delta("off", "Hello ")
        yield Delta("off", "world")
        self.local_done.set()
        self.gate.wait(30)
        yield Delta("on", "Hello ")
        yield Finished(_record(), "Hello world", "Hello there")


def _setup(url: str) -> tuple[int, str]:
    with session_scope(url) as session:
        event = Event(code="FAIR-1", name="Fair", region="sf", city="SF", timezone="UTC", latency_fair=True)
        session.add(event)
        session.flush()
        conversation = start_conversation(session, join_event(session, event))
        conversation_id, side = conversation.id, conversation.handoff_side
    return conversation_id, side


def test_fair_display_holds_the_faster_pane_back_until_both_are_done(sqlite_url: str) -> None:
    conversation_id, side = _setup(sqlite_url)
    script = FastLocal()
    store = lambda record: in_transaction(sqlite_url, lambda s: record_turn(s, conversation_id, record).id)  # noqa: E731
    fair = TurnRunner("Greet me", script, store, fair=True).start()
    assert script.local_done.wait(30)
    assert fair.snapshot().texts == {"off": "", "on": ""}  # the local answer is complete but not shown yet
    script.gate.set()
    view = _until(fair, lambda v: v.state != "running")
    assert view.texts == {"off": "Hello world", "on": "Hello there"} and view.turn.display == "fair"

    comparison = BlindComparison(conversation_id=conversation_id, handoff_side=side)
    comparison.add_turn(view.turn)
    save_vote(sqlite_url, comparison.submission("a", None, {}))
    with session_scope(sqlite_url) as session:
        vote = session.scalar(select(Vote))
        assert vote.display == "fair" and vote.time_to_vote_ms is not None and vote.time_to_vote_ms >= 0


def test_live_display_streams_each_pane_as_it_comes(sqlite_url: str) -> None:
    conversation_id, _ = _setup(sqlite_url)
    script = FastLocal()
    store = lambda record: in_transaction(sqlite_url, lambda s: record_turn(s, conversation_id, record).id)  # noqa: E731
    live = TurnRunner("Greet me", script, store).start()
    assert script.local_done.wait(30)
    assert _until(live, lambda v: v.texts["off"] == "Hello world").texts["on"] == ""
    script.gate.set()
    assert _until(live, lambda v: v.state != "running").turn.display == "live"
