"""The event budget is never exceeded, also with many threads handing off at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from db.models import Event
from db.session import session_scope
from playground.engine.cloud import CloudResult
from playground.handoff.budget import EventBudget, ParticipantRateLimit
from playground.handoff.policies import AlwaysPolicy
from playground.settings import Settings
from tests.handoff_helpers import comparison, event_with_participant, fast, run_turn


def _result(cost: Decimal | None, error_kind: str | None = None, text: str = "") -> CloudResult:
    return CloudResult(
        text=text,
        model="m",
        base_url_host="h",
        tokens_in=None,
        tokens_out=None,
        ttft_ms=None,
        latency_ms=1.0,
        finish_reason=None,
        retries=0,
        error_kind=error_kind,
        cost=cost,
    )


def test_concurrent_reservations_never_exceed_the_budget(db_url: str) -> None:
    event_id, _ = event_with_participant(db_url, budget=Decimal("1.000000"))
    budget = EventBudget(db_url, event_id)
    with ThreadPoolExecutor(max_workers=12) as pool:
        granted = [r for r in pool.map(lambda _: budget.reserve(Decimal("0.150000")), range(40)) if r]
    assert len(granted) == 6  # 6 × 0.15 = 0.90; a 7th would make 1.05
    limit, spent = budget.state()
    assert spent == Decimal("0.900000") <= limit


def test_settling_charges_the_real_cost_and_frees_the_rest(db_url: str) -> None:
    event_id, _ = event_with_participant(db_url, budget=Decimal("1"))
    budget = EventBudget(db_url, event_id)
    reservation = budget.reserve(Decimal("0.5"))
    assert budget.settle(reservation, _result(Decimal("0.012345"))) == Decimal("0.012345")
    refused = budget.reserve(Decimal("0.2"))
    assert budget.settle(refused, _result(None, "rate_limited")) == 0  # refused calls cost nothing
    timed_out = budget.reserve(Decimal("0.1"))
    assert budget.settle(timed_out, _result(None, "timeout")) == Decimal("0.1")  # may be billed: kept
    assert budget.state()[1] == Decimal("0.112345")


def test_an_event_without_budget_is_not_limited(db_url: str) -> None:
    event_id, _ = event_with_participant(db_url, budget=None)
    assert EventBudget(db_url, event_id).reserve(Decimal("1000")) is not None


def test_rate_limit_counts_each_participant_apart() -> None:
    limit = ParticipantRateLimit("2/minute", scope="test-rate")
    assert [limit.allow(1), limit.allow(1), limit.allow(1), limit.allow(2)] == [True, True, False, True]


@pytest.mark.slow
def test_concurrent_handoffs_stop_when_the_budget_is_spent(standin: Settings, db_url: str) -> None:
    settings = fast(standin, max_new_tokens=8)
    live_probe = comparison(settings, AlwaysPolicy(), 0.5)
    one_call = live_probe.cloud.max_cost(live_probe.messages([], "Name a planet."))
    event_id, participant = event_with_participant(db_url, budget=one_call * 2)  # room for two calls' worst case
    live = comparison(settings, AlwaysPolicy(), 0.5, db_url, event_id)
    with ThreadPoolExecutor(max_workers=5) as pool:
        turns = list(pool.map(lambda _: run_turn(live, "Name a planet.", participant)[1], range(5)))
    decisions = [t.record.decision for t in turns]
    # all five reserve at once, so two fit; a call settled early may free room for a third
    assert sum(d.blocked_by is None for d in decisions) >= 2
    assert sum(d.blocked_by == "budget" for d in decisions) >= 1
    charged = sum(t.record.answer("on").cost for t in turns if t.record.answer("on").source == "cloud")
    with session_scope(db_url) as session:
        event = session.get(Event, event_id)
        assert event.cloud_spent == charged <= event.cloud_budget


def test_the_worst_case_reserved_bounds_an_emoji_prompt_by_its_bytes() -> None:
    prices = Settings().cloud_prices
    ascii_cost = prices.max_cost("gpt-4.1-mini", [{"role": "user", "content": "a" * 1000}], 0)
    emoji_cost = prices.max_cost("gpt-4.1-mini", [{"role": "user", "content": "🎉" * 1000}], 0)
    assert emoji_cost >= prices.cost("gpt-4.1-mini", 4 * 1000, 0) > ascii_cost


@pytest.mark.slow
def test_concurrent_emoji_handoffs_never_spend_past_a_tight_budget(standin: Settings, db_url: str) -> None:
    """Each emoji is ~3 tokens for the stand-in's tokenizer: a reservation by characters settled above itself."""
    settings = fast(standin, max_new_tokens=8)
    prompt = "🎉🚀🌍" * 100
    probe = comparison(settings, AlwaysPolicy(), 0.5)
    one_call = probe.cloud.max_cost(probe.messages([], prompt))
    event_id, participant = event_with_participant(db_url, budget=one_call * 2)
    live = comparison(settings, AlwaysPolicy(), 0.5, db_url, event_id)
    with ThreadPoolExecutor(max_workers=4) as pool:
        turns = list(pool.map(lambda _: run_turn(live, prompt, participant)[1], range(4)))
    cloud = [t.record.answer("on") for t in turns if t.record.answer("on").source == "cloud"]
    assert cloud and all(a.tokens_in > 2 * len(prompt) for a in cloud)  # the tokenizer really counts emoji as several
    with session_scope(db_url) as session:
        event = session.get(Event, event_id)
        assert event.cloud_spent == sum(a.cost for a in cloud) <= event.cloud_budget
