"""``kill -9`` of a process on the submit path: no half-written turn, answer or vote, and the
database opens cleanly and takes writes again."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Answer, Event, HandoffDecision, Rating, Turn, Vote
from db.session import in_transaction, session_scope
from feedback.capture import record_turn
from tests.conftest import ROOT
from tests.factories import make_event
from tests.submit_worker import large_turn

pytestmark = pytest.mark.reliability


def spawn(url: str, code: str, marker: Path, pause_at: int | None) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "tests.submit_worker", url, code, str(marker)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([*args, *([str(pause_at)] if pause_at is not None else [])], cwd=ROOT, env=env)


def wait_for(condition, process: subprocess.Popen[bytes], timeout: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the worker died before it was killed"
        assert time.monotonic() < deadline, "the worker never got there"
        time.sleep(0.02)


def assert_whole(url: str, code: str) -> tuple[int, int]:
    """Every stored turn has its decision and both answers, every vote its two ratings and its turn."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split("///", 1)[1]) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    with session_scope(url) as session:
        event_id = session.scalar(select(Event.id).where(Event.code == code))
        turns = session.scalars(select(Turn)).all()
        for turn in turns:
            assert sorted(a.arm for a in turn.answers) == ["off", "on"]
            assert turn.decision is not None
            assert len(turn.prompt) > 2000 and all(len(a.text) > 2000 for a in turn.answers)  # never truncated
        votes = session.scalars(select(Vote).where(Vote.event_id == event_id)).all()
        turn_ids = {turn.id for turn in turns}
        for vote in votes:
            assert vote.turn_id in turn_ids
            assert sorted(r.arm for r in vote.ratings) == ["off", "on"]
            assert vote.comment == "comment " * 50
        for model, parent in ((Answer, Answer.turn_id), (HandoffDecision, HandoffDecision.turn_id)):
            assert session.scalar(select(func.count()).select_from(model).where(parent.not_in(turn_ids))) == 0
        assert session.scalar(select(func.count()).select_from(Rating)) == 2 * len(votes)
        return len(turns), len(votes)


@pytest.fixture
def event_code(db_url: str) -> str:
    make_event(db_url, "KILL", "sf")
    return "KILL"


@pytest.mark.parametrize(
    ("pause_at", "turns", "votes"), [(0, 0, 0), (1, 1, 0), (2, 1, 1)], ids=["turn", "vote", "next-turn"]
)
def test_killed_inside_a_write_transaction_leaves_nothing_half_written(
    db_url: str, event_code: str, tmp_path: Path, pause_at: int, turns: int, votes: int
) -> None:
    marker = tmp_path / "rounds.txt"
    worker = spawn(db_url, event_code, marker, pause_at)
    try:
        wait_for(marker.with_suffix(".inside").exists, worker)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert assert_whole(db_url, event_code) == (turns, votes)
    reopened_write(db_url)


def test_killed_at_random_moments_of_a_busy_submit_loop(db_url: str, event_code: str, tmp_path: Path) -> None:
    rng = random.Random(12)
    for round_ in range(2):
        marker = tmp_path / f"rounds-{round_}.txt"
        worker = spawn(db_url, event_code, marker, None)
        try:
            wait_for(lambda m=marker: m.exists() and len(m.read_text().split()) >= 2, worker)
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        confirmed = [int(line) for line in marker.read_text().split()]
        turns, votes = assert_whole(db_url, event_code)
        assert votes >= len(confirmed)  # every round the worker finished is stored
    reopened_write(db_url)


def reopened_write(url: str) -> None:
    """The database takes the next attendee's turn as if nothing had happened."""
    with session_scope(url) as session:
        conversation_id = session.scalar(select(func.min(Turn.conversation_id))) or None
    if conversation_id is None:
        from db.models import Conversation

        with session_scope(url) as session:
            conversation_id = session.scalar(select(Conversation.id).limit(1))
    assert in_transaction(url, lambda s: record_turn(s, conversation_id, large_turn(99)).id) > 0
