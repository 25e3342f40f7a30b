"""Handoff: what the decision costs, and what early handoff buys the handoff pane.

    python -m bench.handoff

Runs real turns through ``playground.comparison.Comparison`` with the bundled engine and the real
cloud stand-in (``transformers serve`` on 127.0.0.1), the ``confidence`` policy at threshold 0 so
every turn hands off, and the same MT-Bench prompts twice, interleaved: with early handoff (the
cloud call starts once the running score crosses the threshold, after ``early_min_tokens``) and
without (the policy decides after the full local answer). Figures: the handoff pane's time to first
token (from the start of the turn to its first text; the stand-in and the engine get half the
cores each, as a remote cloud would not compete with the engine), and the decision's own latency as a share
of the local generation time (from the stored turn record; with early handoff, plus the cost of
scoring the draft after every one of its tokens: the worst case, where it never fires).
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from bench.common import Target, free_port, report
from bench.prompts import questions
from feedback.cpus import usable_cpus
from playground.comparison import Comparison, Delta, Finished
from playground.engine.cloud import CloudClient
from playground.engine.local import LocalEngine
from playground.engine.standin import start_standin
from playground.handoff.base import PolicyInput
from playground.handoff.policies import get_policy
from playground.handoff.signals import token_signals
from playground.settings import Settings

PROMPTS = 4
NEW_TOKENS = 128
DECISION_SHARE_TARGET = 0.05
SPEEDUP_TARGET = 2.0


def turn(comparison: Comparison, prompt: str) -> tuple[float, Finished]:
    """(handoff pane's time to first text in s, the finished turn)."""
    started = time.perf_counter()
    first_on: float | None = None
    finished = None
    for event in comparison.run(prompt, [], []):
        if isinstance(event, Delta) and event.arm == "on" and event.text and first_on is None:
            first_on = time.perf_counter() - started
        if isinstance(event, Finished):
            finished = event
    assert finished is not None and first_on is not None
    return first_on, finished


def running_score_ms(tokens: int, settings: Settings, seed: int = 0) -> float:
    """What early handoff adds when it never fires: the policy scored on the draft after every token
    (as ``Comparison`` does), over an answer of ``tokens`` tokens."""
    rng = random.Random(seed)
    logprobs = [-rng.expovariate(1.0) for _ in range(tokens)]
    entropies = [rng.uniform(0.0, 4.0) for _ in range(tokens)]
    policy = get_policy("confidence")
    started = time.perf_counter()
    for n in range(settings.early_min_tokens, tokens + 1):
        data = PolicyInput([], "", logprobs[:n], entropies[:n])
        policy.score(data, token_signals(logprobs[:n], entropies[:n]))
    return (time.perf_counter() - started) * 1000


def _standin_on_own_cores(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """Start the stand-in with its share of the cores, and keep the rest for the engine.

    At an event the cloud is another machine. Here the stand-in runs the same kind of model on the
    same CPU, and two torch processes each spinning threads over every core slow each other down
    many times over (OpenMP barriers wait for descheduled threads), which would measure the
    co-location, not the handoff. So each side gets half the cores.
    """
    cores = max(1, usable_cpus() // 2)
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(cores)  # read by the stand-in's torch at start-up
    try:
        process = start_standin(settings, log)
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    torch.set_num_threads(cores)
    return process


def main() -> list[Target]:
    base = Settings(
        standin_port=free_port(), max_new_tokens=NEW_TOKENS, temperature=0.0, shadow_rate=0.0, handoff_threshold=0.0
    )
    with tempfile.TemporaryDirectory(prefix="bench-handoff-") as folder:
        standin = _standin_on_own_cores(base, Path(folder) / "standin.log")
        try:
            engine = LocalEngine(base)
            engine.warm_up()
            cloud = CloudClient(base)
            comparisons = {
                early: Comparison(
                    engine, cloud, get_policy("confidence"), 0.0, base.model_copy(update={"early_handoff": early})
                )
                for early in (True, False)
            }
            ttft: dict[bool, list[float]] = {True: [], False: []}
            shares: list[float] = []
            for index, prompt in enumerate(questions()[:PROMPTS]):
                for early in (True, False) if index % 2 == 0 else (False, True):
                    seconds, finished = turn(comparisons[early], prompt)
                    ttft[early].append(seconds)
                    decision = finished.record.decision
                    local = finished.record.answer("off")
                    assert decision.handed_off and local is not None and local.latency_ms
                    scoring_ms = running_score_ms(local.tokens_out or 0, base) if early else 0.0
                    shares.append((decision.latency_ms + scoring_ms) / local.latency_ms)
                    print(
                        f"  prompt {index} early={early}: handoff pane first text after {seconds:.2f} s, "
                        f"decision {decision.latency_ms:.2f} ms (+ {scoring_ms:.1f} ms if scored on every "
                        f"token) of {local.latency_ms:.0f} ms local",
                        flush=True,
                    )
            engine.close()
        finally:
            standin.terminate()
            standin.wait(timeout=30)
    early_s, late_s = statistics.median(ttft[True]), statistics.median(ttft[False])
    print(f"handoff pane TTFT (median): early {early_s:.2f} s, after the full answer {late_s:.2f} s", flush=True)
    return [
        Target("handoff decision cost / local generation time", max(shares), DECISION_SHARE_TARGET, "", False),
        Target(
            "early handoff: handoff-pane TTFT speed-up vs deciding after the full answer",
            late_s / early_s,
            SPEEDUP_TARGET,
            "x",
        ),
    ]


if __name__ == "__main__":
    report(main())
