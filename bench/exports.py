"""Researcher exports and the improvement report over 1,000,000 demo votes.

    python -m bench.exports                      # 100,000 and 1,000,000 votes, every format + report
    python -m bench.exports --votes 1000000      # one size only (no flatness figure)
    python -m bench.exports --votes 10000 --votes 100000 --votes 1000000   # the growth table
    python -m bench.exports --jobs csv --jobs jsonl     # some jobs only (the report takes longest)

Each export format (``feedback.export.write_export``) and the report (``feedback.report.build_report``)
runs in a fresh process on a SQLite database of seeded demo votes (``bench.common.demo_database``:
generated once, then reused). Figures: wall time, CPU time (the process's and its worker's, for formats
written in two processes; on a shared machine the wall time is mostly waiting) and peak resident memory
(again plus the worker's); memory is flat in the number of votes when the 1,000,000-vote peak is within
1.25x of the 100,000-vote one (rows stream in batches and statistics aggregate in SQL, so the table never
sits in memory). At the end a table shows time and peak memory
against votes, one column per size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Target, demo_database, machine, report
from feedback.cpus import usable_cpus

SIZES = (100_000, 1_000_000)
SECONDS_TARGET = 30.0
# Where the report's CPU goes at 1M votes (bench/README.md, "The report at a million votes", profiles of sessions 7-9).
REPORT_CPU = (
    "; SQLite's reads of the vote and turn joins, the bootstrap's Newton fits and the replay take most of it "
    "(bench/README.md, the report at a million votes)"
)
FLAT_RATIO = 1.25
JOBS = ("jsonl", "csv", "parquet", "arena", "dpo", "report")


def measure(url: str, job: str) -> dict[str, float]:
    """Run one export or the report in a fresh process: seconds and peak RSS (MiB) of that process."""
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        output = subprocess.run(
            [sys.executable, "-m", "bench.exports", "--child", job, "--url", url, "--out", folder],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(output.stdout.strip().splitlines()[-1])


def _child(job: str, url: str, out: Path) -> None:
    # an export imports only what it uses: the report's imports alone hold ~290 MiB
    from feedback.export import ExportFilters, write_export
    from feedback.export.parts import peak_mib

    started, cpu = time.perf_counter(), _cpu()
    worker_peak = 0.0
    if job == "report":
        from feedback.report import build_report

        build_report(url, out, ExportFilters())
    else:
        result = write_export(url, job, out / f"export.{job}", ExportFilters(), salt=b"bench")
        worker_peak = result.worker_peak_mib
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_mib": peak_mib(), "worker_peak_mib": worker_peak}))


def _cpu() -> float:
    """CPU seconds of this process and of its ended children (an export's worker process, ``feedback.export.parts``)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _peak(figure: dict[str, float]) -> float:
    """Peak memory of a job: its process's, plus its worker's where it wrote in two processes (an upper bound
    on what both held at once)."""
    return figure["peak_mib"] + figure.get("worker_peak_mib", 0.0)


def table(figures: dict[int, dict[str, dict[str, float]]], jobs: tuple[str, ...] = JOBS) -> str:
    """Markdown: one row per job, time (peak memory) per number of votes."""
    sizes = sorted(figures)
    lines = ["| job | " + " | ".join(f"{votes:,} votes" for votes in sizes) + " |"]
    lines.append("| --- |" + " --- |" * len(sizes))
    for job in jobs:
        cells = [f"{figures[v][job]['seconds']:.1f} s ({_peak(figures[v][job]):.0f} MiB)" for v in sizes]
        lines.append(f"| {job} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(sizes: tuple[int, ...] = SIZES, seed: int = 0, jobs: tuple[str, ...] = JOBS) -> list[Target]:
    figures: dict[int, dict[str, dict[str, float]]] = {}
    print(f"machine: {machine()}", flush=True)
    for votes in sizes:
        started = time.perf_counter()
        url = demo_database("sqlite", votes, seed=seed)
        print(f"{votes:,} demo votes ready in {time.perf_counter() - started:.0f} s", flush=True)
        figures[votes] = {}
        for job in jobs:
            figures[votes][job] = measure(url, job)
            print(
                f"  {job:8s} {votes:>9,} votes: {figures[votes][job]['seconds']:6.1f} s "
                f"(CPU {figures[votes][job]['cpu_seconds']:6.1f} s), "
                f"peak {figures[votes][job]['peak_mib']:6.0f} MiB"
                f" (worker {figures[votes][job].get('worker_peak_mib', 0.0):.0f} MiB), "
                f"load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    print(table(figures, jobs), flush=True)
    largest = max(sizes)
    targets = []
    for job in jobs:
        what = "report" if job == "report" else f"export {job}"
        cpu = figures[largest][job]["cpu_seconds"]
        targets.append(
            Target(
                f"{what} over {largest:,} votes: time",
                figures[largest][job]["seconds"],
                SECONDS_TARGET,
                " s",
                False,
                why=f"CPU-bound: {cpu:.0f} s of CPU on {usable_cpus()} cores" + (REPORT_CPU if job == "report" else ""),
            )
        )
        if len(sizes) > 1:
            smallest = 100_000 if 100_000 in sizes and largest > 100_000 else min(sizes)  # the flatness target's pair
            ratio = _peak(figures[largest][job]) / _peak(figures[smallest][job])
            targets.append(
                Target(
                    f"{what}: peak memory {_peak(figures[largest][job]):.0f} MiB at {largest:,} votes / "
                    f"{_peak(figures[smallest][job]):.0f} MiB at {smallest:,}",
                    ratio,
                    FLAT_RATIO,
                    "x",
                    False,
                )
            )
    return targets


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.exports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, action="append", help="demo votes (repeat for several sizes)")
    parser.add_argument("--seed", type=int, default=0, help="demo data seed (default 0)")
    parser.add_argument("--jobs", choices=JOBS, action="append", help="only these jobs (repeat; default all)")
    parser.add_argument("--child", choices=JOBS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.url, args.out)
    else:
        report(main(tuple(args.votes) if args.votes else SIZES, args.seed, tuple(args.jobs or JOBS)))
