"""SQLite writers of one process queue for the database (db.session.begin_write) instead of polling it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from db import session as db_session
from db.models import Event
from db.session import WritersQueue, begin_write, session_factory
from tests.factories import make_event


def _second_writer(url: str, started: threading.Event, done: threading.Event) -> threading.Thread:
    def write() -> None:
        with db_session.session_scope(url) as session:
            started.set()
            begin_write(session)
            session.execute(text("UPDATE events SET name = 'second' WHERE code = 'Q-1'"))
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert started.wait(10)
    return thread


def test_a_second_writer_waits_for_the_first_and_starts_when_it_commits(sqlite_url: str) -> None:
    make_event(sqlite_url, "Q-1")
    first = session_factory(sqlite_url)()
    begin_write(first)
    first.execute(text("UPDATE events SET name = 'first' WHERE code = 'Q-1'"))
    started, done = threading.Event(), threading.Event()
    thread = _second_writer(sqlite_url, started, done)
    assert not done.wait(0.5)  # queued behind the open write transaction
    first.commit()
    first.close()
    thread.join(10)
    assert done.is_set()
    with db_session.session_scope(sqlite_url) as session:
        assert session.scalar(select(Event.name).where(Event.code == "Q-1")) == "second"


def test_a_rolled_back_or_closed_writer_leaves_the_queue(sqlite_url: str) -> None:
    make_event(sqlite_url, "Q-1")
    for end in ("rollback", "close"):
        first = session_factory(sqlite_url)()
        begin_write(first)
        started, done = threading.Event(), threading.Event()
        thread = _second_writer(sqlite_url, started, done)
        assert not done.wait(0.3)
        getattr(first, end)()
        first.close()
        thread.join(10)
        assert done.is_set(), end


def test_begin_write_inside_a_write_transaction_keeps_it(sqlite_url: str) -> None:
    """A transaction that already wrote holds SQLite's write lock: begin_write adds nothing (no second BEGIN)."""
    make_event(sqlite_url, "Q-1")
    with db_session.session_scope(sqlite_url) as session:
        session.execute(text("UPDATE events SET name = 'once' WHERE code = 'Q-1'"))
        begin_write(session)
        begin_write(session)
        assert session.scalar(select(Event.name).where(Event.code == "Q-1")) == "once"


def test_a_writer_that_cannot_get_the_queue_in_time_is_told_the_database_is_busy(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As SQLite's own busy timeout: an OperationalError, which in_transaction retries, then reports."""
    monkeypatch.setattr(db_session, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    first = session_factory(sqlite_url)()
    begin_write(first)
    second = session_factory(sqlite_url)()
    try:
        with pytest.raises(OperationalError):
            begin_write(second)
    finally:
        second.close()
        first.rollback()
        first.close()


def test_the_queue_serves_writers_in_the_order_they_came() -> None:
    queue = WritersQueue()
    assert queue.acquire(timeout=1)
    order: list[int] = []

    def writer(index: int) -> None:
        assert queue.acquire(timeout=30)
        order.append(index)
        queue.release()

    threads = []
    for index in range(5):
        threads.append(threading.Thread(target=writer, args=(index,)))
        threads[-1].start()
        while len(queue._waiters) < index + 1:  # each one in line before the next comes
            threading.Event().wait(0.001)
    queue.release()
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]


def test_a_writer_that_gives_up_waiting_leaves_the_line() -> None:
    queue = WritersQueue()
    assert queue.acquire(timeout=1)
    assert not queue.acquire(timeout=0.05)
    assert len(queue._waiters) == 0
    queue.release()
    assert queue.acquire(timeout=0.05)  # free again: the one that gave up did not keep it


def test_an_exception_inside_a_write_transaction_does_not_wedge_the_queue(sqlite_url: str) -> None:
    """The error rolls the transaction back and the queue passes on: the next writer starts at once."""
    make_event(sqlite_url, "Q-1")

    class Boom(Exception):
        pass

    def fail(session) -> None:  # noqa: ANN001 - a Session
        begin_write(session)
        session.execute(text("UPDATE events SET name = 'lost' WHERE code = 'Q-1'"))
        raise Boom

    for _ in range(3):  # a wedged queue would make the second round wait out the busy timeout and fail
        with pytest.raises(Boom):
            db_session.in_transaction(sqlite_url, fail)
    queue = db_session._SQLITE_WRITERS[str(Path(sqlite_url.split("///", 1)[1]).resolve())]
    assert queue.acquire(timeout=0.05)  # nobody holds it
    queue.release()
    with db_session.session_scope(sqlite_url) as session:
        begin_write(session)
        assert session.scalar(select(Event.name).where(Event.code == "Q-1")) == "Q-1 event"  # rolled back


def test_a_waiter_handed_the_queue_as_its_wait_times_out_owns_it() -> None:
    """No lost hand-over: release gives the queue to a waiter whose own wait has just timed out; that
    waiter reports it holds the queue (it must, or nobody would ever release it again)."""
    queue = WritersQueue()
    queue._guard = threading.RLock()  # so this thread can hold the guard and still call release()
    assert queue.acquire(timeout=1)
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(queue.acquire(timeout=0.2)))
    waiter.start()
    while len(queue._waiters) < 1:  # in line
        threading.Event().wait(0.001)
    with queue._guard:  # the waiter's wait times out, then it blocks on the guard before it can leave the line
        threading.Event().wait(1.0)
        assert len(queue._waiters) == 1
        queue.release()  # hands the queue to the waiter in line
    waiter.join(10)
    assert got == [True]
    assert not queue.acquire(timeout=0.05)  # the waiter holds it…
    queue.release()
    assert queue.acquire(timeout=0.05)  # …until it gives it back
