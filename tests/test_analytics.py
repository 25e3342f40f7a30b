"""The live overview's SQL aggregates on real SQLite and PostgreSQL, against hand-counted data."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import update

from db.analytics import ArmLatency, Scope, compare_regions, overview, votes_over_time
from db.models import Event
from db.session import session_scope
from feedback.stats import wilson_ci
from tests.factories import make_event
from tests.organizer_data import Round, add_rounds


@pytest.fixture
def events(db_url: str) -> dict[str, int]:
    sf = make_event(db_url, "SF-1", "sf", cloud_budget=Decimal("10"))
    eu = make_event(db_url, "EU-1", "europe")
    make_event(db_url, "APAC-1", "apac")
    add_rounds(
        db_url,
        sf,
        [
            Round(
                "on",
                handed_off=True,
                cost=Decimal("0.01"),
                latency_off=10,
                latency_on=100,
                tags_on=["accurate", "clear"],
            ),
            Round(
                "on",
                handed_off=True,
                cost=Decimal("0.01"),
                latency_off=20,
                latency_on=200,
                tags_on=["accurate"],
                stars_on=5,
            ),
            Round("on", latency_off=30, latency_on=300, language="ja"),
            Round(
                "off", handed_off=True, blocked_by="cloud_error", error_kind="timeout", latency_off=40, latency_on=400
            ),
            Round("tie", latency_off=50, latency_on=500, language=None),
        ],
    )
    add_rounds(db_url, eu, [Round("off", language="fr"), Round("off", language="fr")])
    return {"sf": sf, "europe": eu}


def _overview(url: str, scope: Scope):
    with session_scope(url) as session:
        return overview(session, scope)


def test_one_event_overview_counts_exactly_what_happened(db_url: str, events: dict[str, int]) -> None:
    with session_scope(db_url) as session:  # the ledger: 0.02 on the cloud answers + 0.005 a timed-out call kept
        session.execute(update(Event).where(Event.id == events["sf"]).values(cloud_spent=Decimal("0.025")))
    numbers = _overview(db_url, Scope(event_ids=(events["sf"],)))
    assert (numbers.participants, numbers.conversations, numbers.votes) == (5, 5, 5)
    assert numbers.verdicts == {"on": 3, "off": 1, "tie": 1}
    assert numbers.on_win_rate == 0.75
    low, high = wilson_ci(numbers.on_wins, numbers.off_wins)
    assert 0.2 < low < 0.75 < high <= 1.0
    assert (numbers.turns, numbers.handed_off, numbers.reached_cloud) == (5, 3, 2)
    assert numbers.handoff_rate == pytest.approx(0.6)
    assert numbers.blocked == {"cloud_error": 1}
    assert numbers.errors == {"on: timeout": 1}
    assert numbers.cloud_cost == Decimal("0.025") and numbers.cloud_budget == Decimal("10")
    assert numbers.budget_used == pytest.approx(0.0025)
    # nearest rank: p50 = 3rd of 5, p95 = 5th of 5
    assert numbers.latency == [ArmLatency("off", 5, 30.0, 50.0), ArmLatency("on", 5, 300.0, 500.0)]
    assert numbers.top_tags == [("on", "accurate", 2), ("on", "clear", 1)]
    assert numbers.languages == [("en", 3), ("ja", 1), ("unknown", 1)]


def test_all_events_and_regions_add_up(db_url: str, events: dict[str, int]) -> None:
    everything = _overview(db_url, Scope())
    assert everything.votes == 7 and everything.verdicts["off"] == 3
    assert everything.cloud_budget == Decimal("10")
    with session_scope(db_url) as session:
        regions = compare_regions(session)
    assert list(regions) == ["sf", "europe", "apac"]
    assert regions["europe"].verdicts == {"off": 2} and regions["europe"].on_win_rate == 0.0
    assert regions["europe"].languages == [("fr", 2)] and regions["europe"].cloud_budget is None
    assert (
        regions["apac"].votes == 0
        and regions["apac"].on_win_rate is None
        and wilson_ci(regions["apac"].on_wins, regions["apac"].off_wins) is None
    )
    assert regions["apac"].latency == [ArmLatency("off", 0, None, None), ArmLatency("on", 0, None, None)]
    assert sum(r.votes for r in regions.values()) == everything.votes


def test_votes_over_time_are_bucketed_in_sql(db_url: str) -> None:
    event = make_event(db_url, "T-1", "sf")
    base = dt.datetime(2026, 5, 4, 9, 0, tzinfo=dt.UTC)
    add_rounds(db_url, event, [Round("on", at=base + dt.timedelta(minutes=m)) for m in (10, 50, 65, 200)])
    with session_scope(db_url) as session:
        hourly = votes_over_time(session, Scope(event_ids=(event,)), "hour")
        daily = votes_over_time(session, Scope(event_ids=(event,)), "day")
        recent = votes_over_time(session, Scope(event_ids=(event,), since=base + dt.timedelta(hours=1)), "hour")
        with pytest.raises(ValueError, match="bucket"):
            votes_over_time(session, Scope(), "week")
    assert hourly == [(base, 2), (base.replace(hour=10), 1), (base.replace(hour=12), 1)]
    assert daily == [(base.replace(hour=0), 4)]
    assert recent == [(base.replace(hour=10), 1), (base.replace(hour=12), 1)]
