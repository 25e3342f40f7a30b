"""Limits that hold per person and across replicas: started turns, running turns per event, cloud calls,
and the participant kept across reloads by a signed token."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from db.models import Event, TurnSlot, utcnow
from db.session import in_transaction, session_scope
from db.slots import SlotRefused, give_back_slot, take_slot
from feedback.capture import join_event
from feedback.errors import HallBusy, RateLimited
from playground import attendee_session
from playground.attendee_session import (
    BlindComparison,
    load_event,
    participant_token,
    returning_participant,
    start_turn,
)
from playground.comparison import Delta, TurnEvent
from playground.handoff.budget import ParticipantRateLimit, rate_limiter
from playground.i18n import Translator
from playground.settings import Settings
from tests.conftest import ROOT, free_port

TTL = dt.timedelta(minutes=10)
REDIS = "redis://127.0.0.1:6379/0"


def _event(url: str, code: str = "LIMITS") -> tuple[int, list[int]]:
    with session_scope(url) as session:
        event = Event(code=code, name="Limits", region="sf", city="San Francisco", timezone="UTC")
        session.add(event)
        session.flush()
        return event.id, [join_event(session, event).id for _ in range(8)]


def _take(url: str, event_id: int, participant_id: int, **limits: object) -> int | SlotRefused:
    options = {"per_minute": 6, "max_running": 0, "ttl": TTL} | limits
    return in_transaction(url, lambda session: take_slot(session, event_id, participant_id, **options))


def test_started_turns_count_against_the_prompt_rate_even_when_given_back(db_url: str) -> None:
    event_id, (alice, bob, *_) = _event(db_url)
    for _ in range(2):
        slot = _take(db_url, event_id, alice, per_minute=2)
        assert isinstance(slot, int)
        in_transaction(db_url, lambda session, slot=slot: give_back_slot(session, slot))  # e.g. both panes stopped
    refused = _take(db_url, event_id, alice, per_minute=2)
    assert isinstance(refused, SlotRefused) and refused.reason == "rate" and 1 <= refused.wait_s <= 60
    assert isinstance(_take(db_url, event_id, bob, per_minute=2), int)  # per person
    later = utcnow() + dt.timedelta(minutes=1, seconds=1)
    assert isinstance(_take(db_url, event_id, alice, per_minute=2, now=later), int)


def test_a_turn_that_never_started_does_not_count(db_url: str) -> None:
    event_id, (alice, *_) = _event(db_url)
    slot = _take(db_url, event_id, alice, per_minute=1)
    in_transaction(db_url, lambda session: give_back_slot(session, slot, counted=False))
    assert isinstance(_take(db_url, event_id, alice, per_minute=1), int)


def test_event_caps_running_turns_and_a_crashed_replicas_slots_lapse(db_url: str) -> None:
    event_id, people = _event(db_url)
    first, _ = (_take(db_url, event_id, person, max_running=2) for person in people[:2])
    busy = _take(db_url, event_id, people[2], max_running=2)
    assert busy == SlotRefused("busy", 2, running=2)
    other_event, others = _event(db_url, "OTHER")
    assert isinstance(_take(db_url, other_event, others[0], max_running=2), int)  # per event
    in_transaction(db_url, lambda session: give_back_slot(session, first))
    assert isinstance(_take(db_url, event_id, people[2], max_running=2), int)
    after_expiry = utcnow() + TTL + dt.timedelta(seconds=1)  # nobody gave these back: they lapse
    assert isinstance(_take(db_url, event_id, people[3], max_running=2, now=after_expiry), int)


def test_concurrent_starts_never_pass_the_event_cap(db_url: str) -> None:
    event_id, people = _event(db_url)
    start = threading.Barrier(len(people))
    results: list[int | SlotRefused] = []

    def attendee(person: int) -> None:
        start.wait()
        results.append(_take(db_url, event_id, person, max_running=3))

    threads = [threading.Thread(target=attendee, args=(p,)) for p in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(isinstance(r, int) for r in results) == 3
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count()).select_from(TurnSlot)) == 3


def _scripted(events: list[TurnEvent], hold: threading.Event):  # noqa: ANN202
    """Stands in for ``comparison_for``: a comparison whose run streams a little, then waits."""

    class Scripted:
        def run(self, *args: object, **kwargs: object) -> Iterator[TurnEvent]:
            yield from events
            hold.wait(30)

    return lambda *args, **kwargs: Scripted()


def test_stopping_both_panes_still_counts_and_busy_event_says_so(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold = threading.Event()
    monkeypatch.setattr(attendee_session, "comparison_for", _scripted([Delta("off", "Hi"), Delta("on", "Hi")], hold))
    settings = Settings(max_prompts_per_minute=1, max_running_turns_per_event=1)
    event_id, (alice, bob, *_) = _event(sqlite_url)
    event = load_event(sqlite_url, "LIMITS")
    comparison = BlindComparison()
    runner = start_turn(sqlite_url, settings, event, alice, comparison, "Hello?")
    with pytest.raises(HallBusy) as busy:
        start_turn(sqlite_url, settings, event, bob, BlindComparison(), "Me too")
    assert "1 answers are being written right now (the most at once is 1)" in Translator("en").error(busy.value)
    runner.stop("off")
    runner.stop("on")
    hold.set()
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    while _running(sqlite_url) and dt.datetime.now() < deadline:
        threading.Event().wait(0.05)
    assert not _running(sqlite_url)  # the abandoned turn gave its slot back
    with pytest.raises(RateLimited):  # ...but it still counted for the person who started it
        start_turn(sqlite_url, settings, event, alice, comparison, "Again")
    runner = start_turn(sqlite_url, settings, event, bob, BlindComparison(), "Me too")
    runner.stop("off")
    runner.stop("on")


def _running(url: str) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(TurnSlot).where(TurnSlot.finished_at.is_(None)))


def test_cloud_call_limit_holds_across_replicas_sharing_redis() -> None:
    scope = f"test-{uuid.uuid4().hex}"
    replica_a = ParticipantRateLimit("3/minute", scope=scope, storage_uri=REDIS)
    rate_limiter.cache_clear()  # a second process: its own connection to the same Redis
    replica_b = ParticipantRateLimit("3/minute", scope=scope, storage_uri=REDIS)
    assert replica_a.limiter is not replica_b.limiter
    calls = [replica_a.allow(7), replica_b.allow(7), replica_a.allow(7), replica_b.allow(7), replica_a.allow(8)]
    assert calls == [True, True, True, False, True]


FIRST_TURNS_TOGETHER = """
import threading
from playground.handoff.budget import ParticipantRateLimit

barrier, failed = threading.Barrier(8), []

def first_turn(participant):
    barrier.wait()
    try:
        ParticipantRateLimit("3/minute", scope="fresh-replica", storage_uri="{storage}").allow(participant)
    except Exception as error:
        failed.append(repr(error))

threads = [threading.Thread(target=first_turn, args=(p,)) for p in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(failed)
"""


def test_the_first_turns_of_a_fresh_replica_together_all_reach_the_shared_store() -> None:
    """A new process (nothing imported yet), eight turns asking for the Redis limiter at once: none fails
    (``limits`` read a half-imported ``redis`` as version 0.0.0 and refused to start; failed 3 runs of 3)."""
    script = FIRST_TURNS_TOGETHER.replace("{storage}", REDIS)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_memory_storage_is_one_process_only() -> None:
    """Why replicas need the shared store: two in-memory limiters each allow the full limit."""
    scope = f"test-{uuid.uuid4().hex}"
    replica_a = ParticipantRateLimit("1/minute", scope=scope)
    rate_limiter.cache_clear()
    replica_b = ParticipantRateLimit("1/minute", scope=scope)
    assert replica_a.allow(1) and replica_b.allow(1)


def test_unreachable_limit_storage_refuses_cloud_calls() -> None:
    port = free_port()  # nobody listens there
    limit = ParticipantRateLimit("3/minute", scope="down", storage_uri=f"redis://127.0.0.1:{port}/0")
    assert limit.allow(1) is False


def test_participant_token_brings_back_the_same_participant_only(db_url: str) -> None:
    settings = Settings(participant_secret=SecretStr("replica-shared-secret"))
    event_id, (alice, *_) = _event(db_url)
    other_id, _ = _event(db_url, "OTHER")
    event, other = load_event(db_url, "LIMITS"), load_event(db_url, "OTHER")
    token = participant_token(db_url, settings, event, alice)
    assert "replica-shared-secret" not in token
    assert returning_participant(db_url, settings, event, token) == alice
    same_secret_elsewhere = Settings(participant_secret=SecretStr("replica-shared-secret"))
    assert returning_participant(db_url, same_secret_elsewhere, event, token) == alice  # another replica
    uid, signature = token.split(".")
    tampered = f"{uid}.{signature[:-1]}{'0' if signature[-1] != '0' else '1'}"
    assert returning_participant(db_url, settings, event, tampered) is None
    assert returning_participant(db_url, settings, other, token) is None  # signed for one event only
    assert returning_participant(db_url, Settings(participant_secret=SecretStr("x")), event, token) is None
    for junk in (None, "", "no-dot", "a.b.c", f"{uuid.uuid4()}.{signature}"):
        assert returning_participant(db_url, settings, event, junk) is None
