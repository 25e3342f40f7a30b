"""Demo data, export and report at scale: `python -m bench.exports --votes 1000000`.

Prints one line per target (bench.common): demo-data and export throughput, and the export's peak
memory growth, which must stay bounded (batches, not the whole table) whatever the number of votes.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from bench.common import Target, report
from db.session import upgrade
from feedback.demo_data import generate
from feedback.export import ExportFilters, write_export


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--votes", type=int, default=1_000_000)
    parser.add_argument("--format", default="parquet")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        upgrade(url)
        started = time.perf_counter()
        generate(url, args.votes, seed=0)
        demo_s = time.perf_counter() - started
        before = _peak_mib()
        started = time.perf_counter()
        result = write_export(url, args.format, Path(folder) / f"votes.{args.format}", ExportFilters())
        export_s = time.perf_counter() - started
        growth = _peak_mib() - before
    report([
        Target("demo-data votes/s", args.votes / demo_s, 2_000),
        Target(f"export {args.format} rows/s", result.rows / export_s, 5_000),
        Target("export peak memory growth", growth, 1_024, " MiB", higher_is_better=False),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
