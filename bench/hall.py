"""Event hall: simulated attendees arriving as a Poisson process against app replicas, one PostgreSQL,
the shared limits store, the local engine and the cloud stand-in.

    python -m bench.hall                          # short default run
    python -m bench.hall --rates 0.05,0.1,0.2 --attendees 20 --replicas 2
    python -m bench.hall --app 8                  # only the app's own overhead: 8 attendees at once vs the engine alone

Each replica is its own process doing what one ``handoff serve`` process does for its sessions:
the attendee page's services (``playground.attendee_session``: consent, ``start_turn`` with the
shared limits, the background ``TurnRunner`` the page polls, ``save_feedback``), with its own local
engine, on one shared PostgreSQL database and one Redis for the cloud-call limit. Attendees are
threads in the replica they arrived at (sticky sessions). They are driven through the services and
not through Chromium on purpose: on a 2-core machine the browsers would take the CPU the engine
needs (the issue's baseline, 8 Chromiums and one ``make run``, measured mostly that), while the
code path from "send" to the first token is the same one the page runs; the pages themselves are
covered by ``tests/test_hall_replicas.py`` in real Chromium (two ``handoff serve`` replicas started
with this module's ``engine_server`` and ``replica_env``).

Per arrival rate: attendees served (every turn answered and stored, every vote confirmed), p50/p95
time to first token per pane (from "send" to the first text the page would draw: the local pane is
the ``off`` arm, the handoff pane the ``on`` arm), generated tokens per second (stored answers),
votes confirmed by ``save_feedback`` against votes found in the database, and errors. The largest
rate whose p95 TTFT (worst pane) stays within 2 s is the hall's capacity on this machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import random
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Target, free_port, machine, on_free_ports, percentile, report, scratch_postgres
from bench.hall_app import CLIENTS

ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = ROOT / "data" / "models"
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TTFT_TARGET_S = 2.0
DEFAULT_RATES = (0.05, 0.2)  # attendees arriving per second
DEFAULT_ATTENDEES = 5  # per rate: the first N arrivals of the Poisson process
NEW_TOKENS = 48
FOLLOW_UP = 0.5  # share of attendees who send the question's second turn
APP_SESSIONS = 8  # the default run's app-overhead leg (bench/hall_app.py): attendees at once through one app
EVENT_CODE = "HALL-BENCH"


@dataclass
class Attendee:
    """What one simulated attendee did, as the replica saw it."""

    index: int
    replica: int
    ttft: dict[str, list[float]] = field(default_factory=lambda: {"off": [], "on": []})
    turns: int = 0
    votes_confirmed: int = 0
    participant_id: int | None = None
    error: str | None = None
    finished_at: float = 0.0


def _replica(number: int, env: dict[str, str], jobs: mp.Queue, results: mp.Queue) -> None:
    """One replica process: load the engine, then serve each arriving attendee in its own thread."""
    os.environ.update(env)
    from playground.runtime import local_engine
    from playground.settings import get_settings

    try:
        local_engine(get_settings())
    except Exception as error:  # noqa: BLE001 - reported to the coordinator, which prints a MISS
        results.put(("failed", number, f"{type(error).__name__}: {error}"))
        return
    results.put(("ready", number, None))
    threads = []
    while (job := jobs.get()) is not None:
        thread = threading.Thread(target=lambda job=job: results.put(("done", number, _attend(number, *job))))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()


def _attend(replica: int, index: int, prompts: list[str], seed: int) -> Attendee:
    """Consent, prompt (and maybe a follow-up), watch both panes stream, vote after each turn."""
    rng = random.Random(seed)
    attendee = Attendee(index, replica)
    try:
        from feedback.votes import PaneRating
        from playground.attendee_session import BlindComparison, give_consent, load_event, save_feedback, start_turn
        from playground.settings import get_settings

        settings = get_settings()
        url = settings.resolved_database_url
        event = load_event(url, EVENT_CODE)
        attendee.participant_id = give_consent(url, event, "en")
        comparison = BlindComparison()
        for prompt in prompts:
            started = time.perf_counter()
            runner = start_turn(url, settings, event, attendee.participant_id, comparison, prompt)
            first: dict[str, float] = {}
            while (view := runner.snapshot()).state == "running":
                for arm in ("off", "on"):
                    if arm not in first and view.texts[arm]:
                        first[arm] = time.perf_counter() - started
                time.sleep(0.02)
            if view.state != "finished" or view.turn is None:
                raise RuntimeError(f"turn {view.state}: {view.error}")
            for arm in ("off", "on"):
                attendee.ttft[arm].append(first.get(arm, time.perf_counter() - started))
            comparison.add_turn(view.turn)
            attendee.turns += 1
            if comparison.identical:
                submission = comparison.submission("identical", None, {"both": PaneRating(rng.randint(1, 5))})
            else:
                winner = rng.choice(("a", "b", "tie", "both_bad"))
                submission = comparison.submission(
                    winner, None, {"a": PaneRating(rng.randint(1, 5)), "b": PaneRating()}
                )
            save_feedback(url, settings, event, submission)
            comparison.saved = True
            attendee.votes_confirmed += 1
    except Exception as error:  # noqa: BLE001 - counted as an error of the run
        attendee.error = f"{type(error).__name__}: {error}"
    attendee.finished_at = time.time()
    return attendee


@dataclass
class Level:
    rate: float
    arrivals: int
    attendees: list[Attendee]
    wall_s: float
    tokens: int
    votes_stored: int

    @property
    def served(self) -> int:
        return sum(a.error is None for a in self.attendees)

    @property
    def errors(self) -> int:
        return len(self.attendees) - self.served + (self.arrivals - len(self.attendees))

    def ttft(self, arm: str, q: float) -> float:
        return percentile([t for a in self.attendees for t in a.ttft[arm]], q)

    @property
    def votes_confirmed(self) -> int:
        return sum(a.votes_confirmed for a in self.attendees)

    @property
    def holds(self) -> bool:
        return self.served == self.arrivals > 0 and max(self.ttft("off", 95), self.ttft("on", 95)) <= TTFT_TARGET_S


class Hall:
    """Replicas of one engine kind on one database; run arrival levels through them."""

    def __init__(self, engine: str, env: dict[str, str], replicas: int) -> None:
        self.engine = engine
        context = mp.get_context("spawn")
        self.jobs = [context.Queue() for _ in range(replicas)]
        self.results: mp.Queue = context.Queue()
        self.processes = [
            context.Process(target=_replica, args=(n, env, self.jobs[n], self.results), daemon=True)
            for n in range(replicas)
        ]
        for process in self.processes:
            process.start()
        for _ in self.processes:
            kind, number, detail = self.results.get(timeout=600)
            if kind != "ready":
                raise RuntimeError(f"replica {number} did not start: {detail}")

    def level(self, url: str, rate: float, attendees: int, questions: list[dict], seed: int) -> Level:
        rng = random.Random(seed)
        arrivals, clock = [], 0.0
        for _ in range(attendees):  # exponential gaps: the first arrivals of a Poisson process
            clock += rng.expovariate(rate)
            arrivals.append(clock)
        started = time.time()
        for index, at in enumerate(arrivals):
            time.sleep(max(0.0, started + at - time.time()))
            question = questions[rng.randrange(len(questions))]
            prompts = list(question["turns"][: 2 if rng.random() < FOLLOW_UP else 1])
            self.jobs[index % len(self.jobs)].put((index, prompts, rng.randrange(2**31)))
        served: list[Attendee] = []
        deadline = time.time() + 900
        while len(served) < len(arrivals) and time.time() < deadline:
            try:
                kind, _, attendee = self.results.get(timeout=5)
            except queue.Empty:
                if not any(process.is_alive() for process in self.processes):
                    break  # every replica died: the missing attendees count as errors
                continue
            if kind == "done":
                served.append(attendee)
        wall = max([a.finished_at for a in served], default=time.time()) - started
        tokens, votes = _stored(url, [a.participant_id for a in served if a.participant_id is not None])
        return Level(rate, len(arrivals), served, wall, tokens, votes)

    def close(self) -> None:
        for jobs in self.jobs:
            jobs.put(None)
        for process in self.processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()


def _stored(url: str, participants: list[int]) -> tuple[int, int]:
    """(tokens generated in stored answers, votes stored) for these participants."""
    from sqlalchemy import func, select

    from db.models import Answer, Conversation, Turn, Vote
    from db.session import session_scope

    if not participants:
        return 0, 0
    with session_scope(url) as session:
        tokens = session.scalar(
            select(func.coalesce(func.sum(Answer.tokens_out), 0))
            .join(Turn, Answer.turn_id == Turn.id)
            .join(Conversation, Turn.conversation_id == Conversation.id)
            .where(Conversation.participant_id.in_(participants), Answer.arm.in_(("off", "on")))
        )
        votes = session.scalar(select(func.count()).select_from(Vote).where(Vote.participant_id.in_(participants)))
    return int(tokens), int(votes)


STANDIN_SHARES_CPUS = (
    "cloud stand-in (transformers serve, the same small model) runs on this machine's CPUs beside the local "
    "engine and the app; a real cloud API answers from elsewhere"
)


def _level_targets(engine: str, level: Level) -> list[Target]:
    """The level's lines, printed at once (a long run shows its figures as they come)."""
    name = f"hall[{engine}]"
    targets: list[Target] = []
    at = f"{name} at {level.rate:g}/s"
    print(
        f"{at}: {level.arrivals} arrived, {level.served} served, TTFT local p50/p95 "
        f"{level.ttft('off', 50):.2f}/{level.ttft('off', 95):.2f} s, handoff pane p50/p95 "
        f"{level.ttft('on', 50):.2f}/{level.ttft('on', 95):.2f} s, {level.tokens / level.wall_s:.1f} tok/s, "
        f"votes confirmed {level.votes_confirmed} / stored {level.votes_stored}, errors {level.errors}",
        flush=True,
    )
    for attendee in level.attendees:
        if attendee.error:
            print(f"  attendee {attendee.index} (replica {attendee.replica}): {attendee.error}", flush=True)
    targets += [
        Target(f"{at}: attendees served", level.served, level.arrivals, ""),
        Target(f"{at}: p95 TTFT local pane", level.ttft("off", 95), TTFT_TARGET_S, " s", higher_is_better=False),
        Target(
            f"{at}: p95 TTFT handoff pane",
            level.ttft("on", 95),
            TTFT_TARGET_S,
            " s",
            higher_is_better=False,
            why=STANDIN_SHARES_CPUS,
        ),
        Target(f"{at}: tokens/s generated", level.tokens / level.wall_s, 5.0, " tok/s"),  # issue baseline: ~5
        Target(f"{at}: votes stored - confirmed", abs(level.votes_stored - level.votes_confirmed), 0, "", False),
        Target(f"{at}: errors", level.errors, 0, "", higher_is_better=False),
    ]
    report(targets)
    return targets


def _capacity(engine: str, levels: list[Level]) -> Target:
    holding = [level.rate for level in levels if level.holds]
    local = [
        level.rate for level in levels if level.served == level.arrivals > 0 and level.ttft("off", 95) <= TTFT_TARGET_S
    ]
    return Target(
        f"hall[{engine}]: largest arrival rate with p95 TTFT ≤ 2 s",
        max(holding, default=0.0),
        0.1,
        " /s",
        why=f"the local pane alone holds up to {max(local):g}/s; the handoff pane's {STANDIN_SHARES_CPUS}"
        if local
        else "",
    )


def _engines() -> list[str]:
    """Engine legs in this run: in-process always; llama.cpp's server once the app can use one."""
    from playground.settings import Settings

    return ["in-process", "llama.cpp server"] if "local_engine" in Settings.model_fields else ["in-process"]


@dataclass(frozen=True)
class EngineLeg:
    """One engine leg: the replicas' extra settings, and the engine servers' process ids where there are any
    (their CPU is the engine's: ``bench.hall_app`` counts it in both of its legs)."""

    env: dict[str, str]
    pids: tuple[int, ...] = ()


@contextmanager
def engine_server(engine: str, log_dir: Path) -> Iterator[EngineLeg]:
    """The replicas' extra settings for this engine, with its engine server running while they need it:
    for ``in-process``, the in-process engine ``auto`` picks without a server; for ``llama.cpp server``,
    ``llama-server`` on the bundled GGUF, as many as ``handoff serve`` starts, each on a free port (logs in
    ``log_dir``), and the openai engine pointed at them all. Used by the benchmark's legs and by ``tests/test_hall_replicas.py``."""
    if engine == "in-process":  # the in-process engine auto would pick here if no server were built
        from playground.hardware import choose_engine, cpu_flags, llama_cpp_installed

        choice = choose_engine("auto", "cpu", "auto", True, cpu_flags(), llama_cpp_installed(), False)
        yield EngineLeg({"HANDOFF_LOCAL_ENGINE": choice.kind})
        return
    from playground.engine.llamacpp_server import llama_servers_running
    from playground.settings import Settings

    settings = on_free_ports(Settings(model_cache_dir=MODEL_CACHE))
    with llama_servers_running(settings, log_dir, timeout_s=600) as (served, processes):
        env = {"HANDOFF_LOCAL_ENGINE": "openai", "HANDOFF_LOCAL_BASE_URL": served.local_base_url}
        yield EngineLeg(env, tuple(process.pid for process in processes))


def replica_env(url: str, standin_port: int, new_tokens: int, **extra: str) -> dict[str, str]:
    """The settings every replica of one hall shares (and ``extra``, e.g. from ``engine_server``): one
    database, the stand-in, one Redis under a key prefix of this hall's own, one participant secret (a
    reload landing on another replica is the same participant). Used by the benchmark's replicas and
    by ``tests/test_hall_replicas.py``'s ``handoff serve`` replicas."""
    return {
        "DATABASE_URL": url,
        "HANDOFF_MODEL_CACHE_DIR": str(MODEL_CACHE),
        "HANDOFF_STANDIN_PORT": str(standin_port),
        "HANDOFF_MAX_NEW_TOKENS": str(new_tokens),
        "HANDOFF_RATE_LIMIT_STORAGE": REDIS,
        "HANDOFF_RATE_LIMIT_PREFIX": f"hall-{uuid.uuid4().hex[:12]}",
        "HANDOFF_PARTICIPANT_SECRET": uuid.uuid4().hex,
        "HANDOFF_CONFIG": "/nonexistent/handoff.toml",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def forget_rate_limits(env: dict[str, str]) -> int:
    """Delete the Redis keys a hall counted cloud calls under (its own prefix), so runs leave nothing
    behind on a shared Redis; returns how many there were."""
    import redis

    client = redis.Redis.from_url(env["HANDOFF_RATE_LIMIT_STORAGE"])
    try:
        keys = list(client.scan_iter(match=f"*{env['HANDOFF_RATE_LIMIT_PREFIX']}*"))
        return client.delete(*keys) if keys else 0
    finally:
        client.close()


def _event(url: str) -> None:
    from db.models import Event
    from db.session import session_scope

    with session_scope(url) as session:
        session.add(Event(code=EVENT_CODE, name="Hall bench", region="sf", city="San Francisco", timezone="UTC"))


def run(
    targets: list[Target], rates: tuple[float, ...], attendees: int, replicas: int, legs: tuple[str, ...] = ()
) -> None:
    """Append each leg's targets as soon as it has them, so a later crash keeps the earlier lines."""
    from db import session as db_session
    from feedback.prompts import load_prompts
    from playground.engine.standin import start_standin
    from playground.settings import Settings

    prompts = load_prompts()  # MT-Bench: each question has a first turn and a follow-up
    port = free_port()
    with scratch_postgres("hp_bench_hall") as url:
        db_session.upgrade(url)
        _event(url)
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"hall-standin-{port}.log"
        standin = start_standin(Settings(model_cache_dir=MODEL_CACHE, standin_port=port), log)
        try:
            for engine in legs or _engines():
                try:
                    with engine_server(engine, log.with_name(f"hall-llama-{port}")) as leg:
                        _leg(targets, engine, url, port, leg.env, rates, attendees, replicas, prompts)
                except Exception as error:  # noqa: BLE001 - a MISS naming the failure; the other leg still runs
                    traceback.print_exc()
                    targets.append(Target(f"hall[{engine}]: ran to the end ({type(error).__name__}: {error})", 0, 1))
        finally:
            standin.terminate()
            standin.wait(timeout=30)


def run_app(
    targets: list[Target], sessions: int, new_tokens: int, legs: tuple[str, ...] = (), client: str = "websocket"
) -> None:
    """The app's own overhead, per engine leg: ``sessions`` attendees (``client``: ``bench.hall_app.CLIENTS``) at
    once through one ``handoff serve`` vs the engine alone."""
    from bench import hall_app
    from db import session as db_session

    for engine in legs or _engines():
        with scratch_postgres("hp_bench_app") as url:
            db_session.upgrade(url)
            logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"hall-app-llama-{free_port()}"
            with engine_server(engine, logs) as leg:
                env = replica_env(url, free_port(), new_tokens, HANDOFF_PORT=str(free_port()), **leg.env)
                hall_app.run(targets, sessions, new_tokens, env, url, engine, leg.pids, client)


def _leg(
    targets: list[Target],
    engine: str,
    url: str,
    port: int,
    extra: dict[str, str],
    rates: tuple[float, ...],
    attendees: int,
    replicas: int,
    prompts: list[dict],
) -> None:
    """One engine's run: replicas up, every arrival rate through them, their targets appended."""
    env = replica_env(url, port, NEW_TOKENS, **extra)
    hall = Hall(engine, env, replicas)
    levels: list[Level] = []
    try:
        for n, rate in enumerate(sorted(rates)):
            levels.append(hall.level(url, rate, attendees, prompts, seed=n))
            targets += _level_targets(engine, levels[-1])  # kept even if a later rate crashes
    finally:
        hall.close()
        forget_rate_limits(env)
        targets.append(_capacity(engine, levels))


class Interrupted(Exception):
    """SIGTERM (a ``timeout`` around the run): end like a crash, printing every line measured so far."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(f"signal {signum}")


def main() -> list[Target]:
    parser = argparse.ArgumentParser(prog="python -m bench.hall", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates", default=",".join(map(str, DEFAULT_RATES)), help="arrivals per second, comma-separated"
    )
    parser.add_argument("--attendees", type=int, default=DEFAULT_ATTENDEES, help="arrivals per rate")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument(
        "--legs", default="", help="engine legs, comma-separated (default every leg: in-process,llama.cpp server)"
    )
    parser.add_argument(
        "--app",
        type=int,
        metavar="N",
        help="only the app's own overhead, N attendees through one `handoff serve` at once vs the engine alone "
        f"(bench/hall_app.py; the default run ends with it for {APP_SESSIONS}, 0 leaves it out)",
    )
    parser.add_argument(
        "--app-client",
        choices=CLIENTS,
        default=CLIENTS[0],
        help="the app-overhead leg's attendees: Streamlit's protocol over a websocket each, nothing drawn (default), "
        "or Chromium pages drawing on the same cores",
    )
    parser.add_argument("--app-tokens", type=int, default=64, help="new tokens per answer in the app-overhead leg")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    rates = tuple(float(r) for r in args.rates.split(","))
    legs = tuple(filter(None, args.legs.split(",")))
    targets: list[Target] = []
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not args.app:  # the levels, unless only the app leg was asked for
            run(targets, rates, args.attendees, args.replicas, legs)
        if args.app != 0:
            run_app(targets, args.app or APP_SESSIONS, args.app_tokens, legs, args.app_client)
    except Exception as error:  # noqa: BLE001 - every line it can, and a MISS naming the crash
        traceback.print_exc()
        targets.append(Target(f"hall: ran to the end ({type(error).__name__}: {error})", 0, 1))
    report(targets)
    return targets


if __name__ == "__main__":
    main()
