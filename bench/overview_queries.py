"""The organizer overview's queries on 1,000,000 votes, on SQLite and PostgreSQL.

    python -m bench.overview_queries [--votes 1000000] [--only sqlite|postgresql] [--url URL ...]

Reads the cached seed-0 demo database of each kind (``bench.common.demo_database``: generated once
per schema head and kept, like the exports' ones; or the filled, migrated databases given with
``--url``), then times one full overview refresh (every aggregate of the live page, read from the
rollups ``db.rollups`` keeps on write) for all events, one region and one event, and the region
comparison; each is the median of ``--repeats`` warm runs. Side by side, once each: the same refresh
computed from the rows (the overview before the rollups) and each of its queries alone (the profile
that chose what to roll up). The targets: a refresh must finish well inside the page's auto-refresh
interval (``organizer_refresh_s``, 5 s): one event ≤ 1 s, all events ≤ 5 s. PostgreSQL: the demo
database ``hp_bench_demo_...`` on 127.0.0.1:5432 (``TEST_POSTGRES_URL`` overrides the admin URL).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from collections.abc import Callable

from sqlalchemy import func, select, text

from bench.common import Target, demo_database, report
from db import analytics
from db import session as db_session
from db.models import Event, Vote

ONE_EVENT_TARGET_S = 1.0
ALL_EVENTS_TARGET_S = 5.0


def _median_s(url: str, work: Callable, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        with db_session.session_scope(url) as session:
            start = time.perf_counter()
            work(session)
            timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def _same(rows: analytics.Overview, rolled: analytics.Overview) -> bool:
    """Equal in every number (energy sums are floats added in another order: to 1e-9 relative)."""
    a, b = dataclasses.asdict(rows), dataclasses.asdict(rolled)
    energy_a, energy_b = a.pop("energy"), b.pop("energy")
    return a == b and all(math.isclose(float(energy_a[k]), float(energy_b[k]), rel_tol=1e-9) for k in energy_a)


def measure(kind: str, votes: int, repeats: int) -> list[Target]:
    """Time the overview on the cached demo database of this kind (generated on first use: ~30 min at 1M)."""
    start = time.perf_counter()
    url = demo_database(kind, votes, seed=0)
    print(f"[{kind}] {votes:,} demo votes ready in {time.perf_counter() - start:.0f} s", flush=True)
    return measure_url(url, repeats)


def measure_url(url: str, repeats: int) -> list[Target]:
    """Time the overview on a filled, migrated database."""
    kind = db_session.get_engine(url).dialect.name
    targets = []
    with db_session.get_engine(url).begin() as connection:
        connection.execute(text("ANALYZE"))
    with db_session.session_scope(url) as session:
        event_id, event_votes = session.execute(
            select(Vote.event_id, func.count()).group_by(Vote.event_id).order_by(func.count().desc()).limit(1)
        ).one()
        region = session.scalar(select(Event.region).where(Event.id == event_id))
    scopes = {
        "all events": analytics.Scope(),
        f"region {region}": analytics.Scope(region=region),
        f"one event ({event_votes:,} votes)": analytics.Scope(event_ids=(event_id,)),
    }
    for label, scope in scopes.items():
        seconds = _median_s(url, lambda s, scope=scope: analytics.overview(s, scope), repeats)
        target = ONE_EVENT_TARGET_S if label.startswith("one event") else ALL_EVENTS_TARGET_S
        targets.append(Target(f"{kind} overview refresh, {label}", seconds, target, " s", higher_is_better=False))
    seconds = _median_s(url, analytics.compare_regions, repeats)
    targets.append(
        Target(
            f"{kind} region comparison (3 overviews)",
            seconds,
            3 * ALL_EVENTS_TARGET_S,
            " s",
            higher_is_better=False,
        )
    )
    for label, scope in scopes.items():
        seconds = _median_s(url, lambda s, scope=scope: analytics.overview_from_rows(s, scope), 1)
        with db_session.session_scope(url) as session:
            same = _same(analytics.overview_from_rows(session, scope), analytics.overview(session, scope))
        print(
            f"[{kind}]   from the rows (before the rollups), {label}: {seconds:.2f} s; "
            f"rollups equal the rows: {'yes' if same else 'NO'}",
            flush=True,
        )
    everything = analytics.Scope()
    parts = {
        "counts": analytics.counts,
        "verdicts": analytics.verdicts,
        "votes_over_time": analytics.votes_over_time,
        "handoffs": analytics.handoffs,
        "errors": analytics.errors,
        "cloud_spend": analytics.cloud_spend,
        "latency_percentiles": analytics.latency_percentiles,
        "top_tags": analytics.top_tags,
        "languages": analytics.languages,
        "energy_use": analytics.energy_use,
    }
    for name, query in parts.items():
        seconds = _median_s(url, lambda s, query=query: query(s, everything), 1)
        print(f"[{kind}]   from the rows, {name} (all events): {seconds * 1000:.0f} ms", flush=True)
    return targets


def main(
    votes: int = 1_000_000,
    repeats: int = 3,
    kinds: tuple[str, ...] = ("sqlite", "postgresql"),
    urls: tuple[str, ...] = (),
) -> list[Target]:
    """Run the benchmark on each database kind (or on each given database); returns one Target per refresh."""
    targets = []
    for url in urls:
        targets += measure_url(url, repeats)
    for kind in () if urls else kinds:
        targets += measure(kind, votes, repeats)
    return targets


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--url", action="append", default=[], help="measure this filled, migrated database")
    args = parser.parse_args()
    report(main(args.votes, args.repeats, (args.only,) if args.only else ("sqlite", "postgresql"), tuple(args.url)))
