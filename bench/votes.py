"""Vote path under a crowd: 1,000 submissions from 50 concurrent writers, on SQLite (WAL) and PostgreSQL.

    python -m bench.votes [--only sqlite|postgresql] [--rounds 3]

Each writer is a thread, as Streamlit sessions are, and calls ``feedback.votes.save_vote`` (the
page's path: its own transaction, retries while the database is briefly unavailable). 900 distinct
votes are sent, plus 100 repeats of already-sent ones with the same idempotency key (double clicks);
afterwards the database must hold each distinct vote exactly once. Latency is per submission, from
the call to the committed transaction (what the attendee waits for, not only the COMMIT statement).

Paced: each writer pauses between its submissions (exponential, mean 250 ms), so the 50 writers
offer ~200 votes/s, far above a real hall (500 attendees voting every 30 s is ~17/s); the targets
use this run. Flat out: no pauses, printed for capacity planning; there the latency is queueing
behind the other 49 writers for the 2 cores and the GIL (Little's law: 50 / throughput). Each vote also
updates the organizer overview's rollups in its transaction (``db.rollups``); the paced run is done
``ROUNDS`` times with and ``ROUNDS`` times without them (the vote path before the rollups: no
conversation lock, no upserts), alternating, in the same process, and the medians are the figures;
after each run the rollups' vote count must equal the stored votes. Client CPU is this process's CPU
time per submission (the app's side; the database server's is not in it). The statements one vote
sends are counted too. PostgreSQL: a database of its own on 127.0.0.1:5432 (trust
auth; ``TEST_POSTGRES_URL`` overrides the admin URL), dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import tempfile
import threading
import time
import unittest.mock
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event, func, select

from bench.common import Target, percentile, report, scratch_postgres
from db import rollups
from db import session as db_session
from db.models import Event, RollupVote, Vote
from feedback.capture import join_event, record_turn, start_conversation
from feedback.records import AnswerRecord, DecisionRecord, TurnRecord
from feedback.votes import PaneRating, VoteSubmission, save_vote

SUBMISSIONS = 1000
REPEATS = 100
WRITERS = 50
PAUSE_S = 0.25
ROUNDS = 3  # paced runs with and without the rollups, alternating


def _turn(prompt: str) -> TurnRecord:
    decision = DecisionRecord(
        policy="confidence",
        policy_version="1",
        stage="post",
        threshold=0.5,
        score=0.3,
        handed_off=False,
        latency_ms=0.1,
        signals={"tokens": 12.0},
    )
    answers = [AnswerRecord(arm=arm, source="local", text="An answer.", model="bench") for arm in ("off", "on")]
    return TurnRecord(prompt=prompt, decision=decision, answers=answers)


def seed_conversations(url: str, count: int) -> list[int]:
    """One event, ``count`` participants with one answered turn each: what votes are cast on."""
    with db_session.session_scope(url) as session:
        event = Event(
            code=f"BENCH-{uuid.uuid4().hex[:6]}", name="bench", region="sf", city="SF", timezone="America/Los_Angeles"
        )
        session.add(event)
        session.flush()
        ids = []
        for i in range(count):
            conversation = start_conversation(session, join_event(session, event))
            record_turn(session, conversation.id, _turn(f"question {i}"))
            ids.append(conversation.id)
    return ids


def _backend_cpu_s(pids: set[int]) -> float:
    """CPU seconds (user + system) the PostgreSQL server processes ``pids`` have used so far (Linux
    ``/proc``; the server runs on this machine); a process that already exited counts nothing."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def hammer(url: str, pause_s: float, seed: int = 1) -> dict[str, float]:
    """Send the submissions from the writers, each pausing ~``pause_s`` between its own; count what
    the database holds afterwards."""
    conversations = seed_conversations(url, SUBMISSIONS - REPEATS)
    rng = random.Random(seed)
    submissions = [
        VoteSubmission(
            idempotency_key=uuid.uuid4().hex,
            conversation_id=conversation_id,
            winner=rng.choice(["a", "b", "tie", "both_bad"]),
            comment=rng.choice([None, "clearer", "too long"]),
            ratings={"a": PaneRating(stars=rng.randint(1, 5))},
        )
        for conversation_id in conversations
    ]
    work = submissions + rng.sample(submissions, REPEATS)
    rng.shuffle(work)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(WRITERS)

    def writer(index: int) -> None:
        pauses = random.Random(seed * 1000 + index)
        barrier.wait()
        for submission in work[index::WRITERS]:
            if pause_s:
                time.sleep(pauses.expovariate(1 / pause_s))
            started = time.perf_counter()
            try:
                save_vote(url, submission)
            except Exception as error:  # noqa: BLE001 - counted, the figure is how many got lost
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
                continue
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)

    # PostgreSQL: the server's CPU per vote, summed over this pool's backends (the pool keeps them to the end)
    # and the connections opened on the way (each one a server process forked and logged in)
    engine, backends, opened = db_session.get_engine(url), set(), [0]

    def connected(dbapi_connection, _record) -> None:  # noqa: ANN001 - pool event arguments
        opened[0] += 1
        if engine.dialect.name == "postgresql":
            backends.add(dbapi_connection.info.backend_pid)

    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:  # the connections already open belong to the count too
            for pid in connection.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            ).scalars():
                backends.add(pid)
    event.listen(engine, "connect", connected)
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    server_started = _backend_cpu_s(backends)
    started, cpu_started = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    server_s = _backend_cpu_s(backends) - server_started
    event.remove(engine, "connect", connected)
    keys = {s.idempotency_key for s in submissions}
    with db_session.session_scope(url) as session:
        stored = session.scalars(select(Vote.idempotency_key).where(Vote.idempotency_key.in_(keys))).all()
        rows = session.scalar(select(func.count()).select_from(Vote))
        rolled_up = session.scalar(select(func.coalesce(func.sum(RollupVote.n), 0))) or 0
    if errors:
        print(f"  {len(errors)} submissions failed, first: {errors[0]}", flush=True)
    return {
        "lost": len(keys - set(stored)),
        "duplicated": rows - len(set(stored)),
        "rollup_drift": abs(int(rolled_up) - rows),  # the overview's vote count against the rows
        "p99_ms": percentile(latencies, 99),
        "p50_ms": percentile(latencies, 50),
        "per_s": len(latencies) / elapsed,
        "cpu_ms": cpu_s * 1000 / len(work),  # this process's CPU (the app's side, not the database server's)
        "server_cpu_ms": server_s * 1000 / len(work) if backends else float("nan"),
        "connects": opened[0],
    }


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-votes-") as folder:
        url = f"sqlite:///{Path(folder) / 'votes.db'}"
        db_session.upgrade(url)
        yield url
        db_session.get_engine(url).dispose()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of its own, dropped afterwards."""
    with scratch_postgres("hp_bench") as url:
        db_session.upgrade(url)
        yield url


@contextlib.contextmanager
def _without_rollups() -> Iterator[None]:
    """The vote path as it was before the overview's rollups (``db.rollups.apply`` and its conversation
    lock do nothing), for a side-by-side figure in the same process; never used outside this benchmark."""
    with (
        unittest.mock.patch.object(rollups, "apply", lambda db, delta: None),
        unittest.mock.patch.object(rollups, "conversation_locked", lambda db, query: query),
    ):
        yield


def one_writer_cost(url: str, votes: int = 200) -> tuple[float, float]:
    """Median ms per ``save_vote`` from one writer, with and without the rollups, interleaved vote by vote
    (so a load change on a shared machine hits both alike)."""
    conversations = seed_conversations(url, 2 * votes)
    timings: dict[bool, list[float]] = {True: [], False: []}
    for i, conversation_id in enumerate(conversations):
        rolled = i % 2 == 0
        submission = VoteSubmission(uuid.uuid4().hex, conversation_id, "a", None, {"a": PaneRating(tags=["clear"])})
        with contextlib.nullcontext() if rolled else _without_rollups():
            started = time.perf_counter()
            save_vote(url, submission)
            timings[rolled].append((time.perf_counter() - started) * 1000)
    return percentile(timings[True], 50), percentile(timings[False], 50)


def statements_per_vote(url: str) -> tuple[int, int]:
    """SQL statements one tagged vote sends, with and without the rollups (BEGIN and COMMIT not counted:
    pysqlite and psycopg send them themselves)."""
    from sqlalchemy import event

    conversations = seed_conversations(url, 2)
    engine = db_session.get_engine(url)
    counts = []

    def count(*_args: object) -> None:
        counts[-1] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        for conversation_id, rolled in zip(conversations, (True, False), strict=True):
            counts.append(0)
            with contextlib.nullcontext() if rolled else _without_rollups():
                save_vote(
                    url, VoteSubmission(uuid.uuid4().hex, conversation_id, "a", None, {"a": PaneRating(tags=["x"])})
                )
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return counts[0], counts[1]


def _line(label: str, kind: str, figures: dict[str, float], rolled: bool) -> str:
    return (
        f"votes on {label}, {kind}{'' if rolled else ', without rollups (before)'}: {SUBMISSIONS} submissions from "
        f"{WRITERS} writers, {figures['per_s']:.0f}/s, p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
        f"client CPU {figures['cpu_ms']:.2f} ms/vote"
        + ("" if math.isnan(figures["server_cpu_ms"]) else f", server CPU {figures['server_cpu_ms']:.2f} ms/vote")
        + f", {figures['connects']} connections opened, lost {figures['lost']}, duplicated {figures['duplicated']}"
        + (f", rollup votes off by {figures['rollup_drift']}" if rolled else "")
    )


DATABASES = {"sqlite": ("SQLite WAL", sqlite_database), "postgresql": ("PostgreSQL", postgres_database)}


def main(rounds: int = ROUNDS, only: tuple[str, ...] = tuple(DATABASES)) -> list[Target]:
    targets = []
    for label, database in (DATABASES[name] for name in only):
        with database() as url:
            with_rollups, without = one_writer_cost(url)
            statements = statements_per_vote(url)
        print(
            f"votes on {label}, one writer, interleaved: median {with_rollups:.2f} ms with the rollups, "
            f"{without:.2f} ms without ({with_rollups / without:.2f}x); statements per tagged vote "
            f"{statements[0]} with, {statements[1]} without",
            flush=True,
        )
        with database() as url:
            print(_line(label, "flat out", hammer(url, 0.0), True), flush=True)
        # paced, with and without the rollups in alternating order, each on a fresh database: a load
        # change on the shared machine hits both alike; the medians over the rounds are the figures
        paced: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for round_ in range(rounds):
            for rolled in (False, True) if round_ % 2 == 0 else (True, False):
                with database() as url, contextlib.nullcontext() if rolled else _without_rollups():
                    figures = hammer(url, PAUSE_S, seed=round_ + 1)
                paced[rolled].append(figures)
                print(_line(label, f"paced, round {round_ + 1}", figures, rolled), flush=True)
        median = {
            rolled: {name: percentile([run[name] for run in runs], 50) for name in ("p50_ms", "p99_ms", "cpu_ms")}
            for rolled, runs in paced.items()
        }
        # each round's pair ran back to back: its ratio is the least touched by the shared machine's load drifting
        ratios = [with_["p99_ms"] / without["p99_ms"] for with_, without in zip(paced[True], paced[False], strict=True)]
        print(
            f"votes on {label}, paced, p99 with / without the rollups per round: "
            + ", ".join(f"{ratio:.2f}x" for ratio in ratios)
            + f" (geometric mean {math.prod(ratios) ** (1 / len(ratios)):.2f}x)",
            flush=True,
        )
        print(
            f"votes on {label}, paced, median of {rounds} rounds: p99 {median[True]['p99_ms']:.1f} ms with the rollups, "
            f"{median[False]['p99_ms']:.1f} ms without ({median[True]['p99_ms'] / median[False]['p99_ms']:.2f}x); "
            f"p50 {median[True]['p50_ms']:.1f} / {median[False]['p50_ms']:.1f} ms; client CPU "
            f"{median[True]['cpu_ms']:.2f} / {median[False]['cpu_ms']:.2f} ms per vote",
            flush=True,
        )
        runs = paced[True]
        targets += [
            Target(
                f"votes {label}: overview rollup votes minus stored votes",
                max(run["rollup_drift"] for run in runs),
                0,
                "",
                False,
            ),
            Target(f"votes {label}: lost", sum(run["lost"] for run in runs), 0, "", False),
            Target(f"votes {label}: duplicated", sum(run["duplicated"] for run in runs), 0, "", False),
            Target(
                f"votes {label}: p99 commit latency (paced, ~{WRITERS / PAUSE_S:.0f}/s offered, median of {rounds} runs)",
                median[True]["p99_ms"],
                50,
                " ms",
                False,
            ),
        ]
    return targets


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=tuple(DATABASES))
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="paced runs with and without the rollups")
    args = parser.parse_args()
    report(main(args.rounds, (args.only,) if args.only else tuple(DATABASES)))
