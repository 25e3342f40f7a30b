"""The database fails under a burst of votes: what the app confirmed is stored exactly once, and
everything else was reported as not saved (and goes in exactly once when the page retries it).

PostgreSQL is a private server this test starts, crashes and restarts; SQLite is locked by a
foreign writer for longer than its busy timeout, so writers meet ``database is locked``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from db import session as db_session
from feedback.votes import save_vote
from tests.own_postgres import OwnPostgres
from tests.vote_burst import BurstOutcome, burst, rounds, stored_votes, votes_per_round

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres().start()
    try:
        db_session.upgrade(server.url)
        yield server
    finally:
        db_session.get_engine(server.url).dispose()
        server.close()


def assert_exactly_once(url: str, outcome: BurstOutcome) -> None:
    """Confirmed votes are stored once under the id the app gave; after the page's retries of the
    rest, every submission is stored exactly once."""
    assert outcome.escaped == []
    assert outcome.attempts == len(outcome.submissions)  # each one either confirmed or reported
    stored = stored_votes(url, [s.idempotency_key for s in outcome.submissions])
    for key, vote_id in outcome.confirmed.items():
        assert stored[key] == [vote_id]
    for key, submission in list(outcome.not_saved.items()):  # what the page does with kept feedback
        outcome.confirmed[key] = save_vote(url, submission, allowed_tags=["helpful"])
    stored = stored_votes(url, [s.idempotency_key for s in outcome.submissions])
    assert all(stored[s.idempotency_key] == [outcome.confirmed[s.idempotency_key]] for s in outcome.submissions)
    assert votes_per_round(url, [s.conversation_id for s in outcome.submissions]) == 1


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_postgres_restart_mid_burst_loses_no_confirmed_vote(own_postgres: OwnPostgres, mode: str) -> None:
    url = own_postgres.url
    submissions = rounds(url, 320)
    outcome = burst(
        url,
        submissions,
        threads=16,
        fault=lambda: own_postgres.restart(mode, down_s=2.0),  # down far longer than save_vote's retries
        fault_after=40,
    )
    assert outcome.not_saved, "the restart should have refused some submissions"
    print(
        f"postgres {mode}: {len(submissions)} submitted, {len(outcome.confirmed)} confirmed, {len(outcome.not_saved)} reported not saved"
    )
    assert_exactly_once(url, outcome)


def test_sqlite_locked_past_its_busy_timeout_loses_no_confirmed_vote(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    db_session.upgrade(url)
    submissions = rounds(url, 96)
    released = threading.Event()

    def foreign_writer() -> None:
        """Another process's long write transaction: holds the write lock past the busy timeout."""
        connection = sqlite3.connect(path, timeout=60, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("UPDATE events SET name = name")
        released.wait()
        connection.execute("COMMIT")
        connection.close()

    holder = threading.Thread(target=foreign_writer, daemon=True)

    def lock() -> None:
        holder.start()
        time.sleep(11)  # the engine's busy timeout is 10 s: the first attempts fail with "database is locked"
        released.set()

    outcome = burst(url, submissions, threads=8, fault=lock, fault_after=8)
    holder.join()
    print(
        f"sqlite: {len(submissions)} submitted, {len(outcome.confirmed)} confirmed, {len(outcome.not_saved)} reported not saved"
    )
    assert_exactly_once(url, outcome)
    db_session.get_engine(url).dispose()
