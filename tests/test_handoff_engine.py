"""Comparison.run with each policy on the real bundled model and the real cloud stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import select

from db.models import Answer, Event, HandoffDecision
from db.session import session_scope
from playground.comparison import BUDGET_NOTE, RATE_NOTE, Delta, cloud_failed_note
from playground.engine.device import resolve_dtype
from playground.engine.model_store import resolve_model
from playground.handoff.policies import AlwaysPolicy, ConfidencePolicy, NeverPolicy
from playground.settings import Settings
from tests.faultproxy import FaultProxy
from tests.handoff_helpers import comparison, event_with_participant, fast, notes, run_turn, store, texts

pytestmark = pytest.mark.slow
PROMPT = "What is the capital of Japan?"


@pytest.fixture
def settings(standin: Settings) -> Settings:
    return fast(standin)


def test_never_keeps_both_arms_local_and_logs_every_signal(settings: Settings) -> None:
    events, finished = run_turn(comparison(settings, NeverPolicy(), 0.5), PROMPT)
    record = finished.record
    decision = record.decision
    assert not decision.handed_off and decision.stage == "pre" and decision.score == 0.0
    assert finished.on_text == finished.off_text == texts(events)["off"] == texts(events)["on"]
    signals = decision.signals
    for key in ("min_logprob", "p10_logprob", "p25_logprob", "mean_logprob", "mean_entropy", "max_entropy", "tokens"):
        assert key in signals, key
    assert set(signals["scores"]) == {"never", "confidence"}
    assert decision.shadow_propensity == 0.0
    assert {a.arm: a.source for a in record.answers} == {"off": "local", "on": "local"}
    off = record.answer("off")
    assert (
        off.model == "SmolLM2-135M-Instruct"
        and off.dtype == resolve_dtype(settings.local_dtype, settings.local_device).dtype
        and off.tokens_in
        and off.ttft_ms
    )


def test_always_starts_the_cloud_call_before_local_generation_ends(settings: Settings) -> None:
    events, finished = run_turn(comparison(settings, AlwaysPolicy(), 0.5), PROMPT)
    record = finished.record
    decision = record.decision
    assert decision.handed_off and decision.blocked_by is None and decision.stage == "pre"
    on = record.answer("on")
    assert on.source == "cloud" and on.text == finished.on_text == texts(events)["on"]
    assert on.cost > 0 and on.price_version == settings.cloud_prices.version
    assert on.base_url_host == settings.cloud_host and "key" not in on.base_url_host
    assert decision.signals["decided_after_ms"] < record.answer("off").latency_ms
    assert "p10_logprob" in decision.signals  # token stats of the off draft, for replay
    assert decision.shadow_propensity is None


def test_confidence_hands_off_early_once_the_running_score_crosses(settings: Settings) -> None:
    settings = fast(settings, early_min_tokens=4, max_new_tokens=24)
    events, finished = run_turn(comparison(settings, ConfidencePolicy(), 0.0), "Explain how a rainbow forms.")
    decision = finished.record.decision
    assert decision.handed_off and decision.signals["early"]
    assert settings.early_min_tokens <= decision.signals["early_token"] < finished.record.answer("off").tokens_out
    assert decision.score >= decision.threshold
    assert finished.record.answer("on").source == "cloud"
    # the off arm still got its whole local answer from the shared draft
    assert finished.off_text == texts(events)["off"] and finished.record.answer("off").finish_reason != "stopped"


def test_confidence_above_every_score_keeps_local(settings: Settings) -> None:
    _, finished = run_turn(comparison(settings, ConfidencePolicy(), 1.01), PROMPT)
    decision = finished.record.decision
    assert not decision.handed_off and not decision.signals["early"] and 0 <= decision.score <= 1
    assert decision.signals["scores"]["confidence"] == decision.score


def test_shadow_call_is_stored_never_shown_with_its_propensity(settings: Settings, sqlite_url: str) -> None:
    _, participant = event_with_participant(sqlite_url)
    events, finished = run_turn(comparison(settings, NeverPolicy(), 0.5, shadow_rate=1.0), PROMPT)
    assert finished.on_text == finished.off_text  # the shadow is not shown
    turn_id = store(sqlite_url, participant, finished)
    with session_scope(sqlite_url) as session:
        answers = {a.arm: a for a in session.scalars(select(Answer).where(Answer.turn_id == turn_id))}
        decision = session.scalar(select(HandoffDecision).where(HandoffDecision.turn_id == turn_id))
        assert answers["shadow"].source == "cloud" and answers["shadow"].text
        assert answers["shadow"].cost > 0 and answers["shadow"].price_version
        assert texts(events)["on"] == finished.off_text  # no cloud delta reached the handoff pane
        assert decision.shadow_propensity == 1.0 and decision.signals["shadow"]["made"]


def test_spent_budget_keeps_the_answer_local_and_says_so(settings: Settings, db_url: str) -> None:
    event_id, participant = event_with_participant(db_url, budget=Decimal("0.000010"))
    events, finished = run_turn(comparison(settings, AlwaysPolicy(), 0.5, db_url, event_id), PROMPT, participant)
    decision = finished.record.decision
    assert decision.handed_off and decision.blocked_by == "budget"
    assert BUDGET_NOTE in notes(events) and finished.notes == [BUDGET_NOTE]
    assert finished.on_text == finished.off_text and finished.record.answer("on").source == "local"
    with session_scope(db_url) as session:
        assert session.get(Event, event_id).cloud_spent == 0


def test_a_spent_budget_uses_none_of_the_participants_cloud_calls(settings: Settings, db_url: str) -> None:
    # the real limiter, one call an hour: two prompts while the budget is spent must leave that call unused
    event_id, participant = event_with_participant(db_url, budget=Decimal("0.000010"))
    live = comparison(settings, AlwaysPolicy(), 0.5, db_url, event_id, rate_limit="1/hour")
    for _ in range(2):
        _, blocked = run_turn(live, PROMPT, participant)
        assert blocked.record.decision.blocked_by == "budget"
    with session_scope(db_url) as session:
        session.get(Event, event_id).cloud_budget = Decimal("1")  # the organizer raises the budget
    _, first = run_turn(live, PROMPT, participant)
    assert first.record.decision.blocked_by is None and first.record.answer("on").source == "cloud"
    _, second = run_turn(live, PROMPT, participant)
    assert second.record.decision.blocked_by == "rate_limit"  # the one call was the one made
    with session_scope(db_url) as session:  # the refused call's reservation was given back
        assert session.get(Event, event_id).cloud_spent == first.record.answer("on").cost


def test_budget_is_charged_the_real_cost_after_a_handoff(settings: Settings, db_url: str) -> None:
    event_id, participant = event_with_participant(db_url, budget=Decimal("1"))
    _, finished = run_turn(comparison(settings, AlwaysPolicy(), 0.5, db_url, event_id), PROMPT, participant)
    on = finished.record.answer("on")
    with session_scope(db_url) as session:
        assert session.get(Event, event_id).cloud_spent == on.cost > 0


def test_participant_rate_limit_keeps_later_turns_local(settings: Settings) -> None:
    # an hour, not a minute: on a loaded machine one handoff turn can outlast a one-minute window
    live = comparison(settings, AlwaysPolicy(), 0.5, rate_limit="1/hour")
    _, first = run_turn(live, PROMPT, participant_id=7)
    events, second = run_turn(live, PROMPT, participant_id=7)
    assert first.record.decision.blocked_by is None and first.record.answer("on").source == "cloud"
    assert second.record.decision.blocked_by == "rate_limit" and RATE_NOTE in notes(events)
    _, other = run_turn(live, PROMPT, participant_id=8)  # another participant is not limited
    assert other.record.decision.blocked_by is None


@pytest.fixture
def proxy(standin: Settings) -> Iterator[FaultProxy]:
    with FaultProxy(standin.standin_host, standin.standin_port) as running:
        yield running


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("500", "server_error"), ("429", "rate_limited"), ("malformed", "malformed"), ("timeout", "timeout")],
)
def test_cloud_failure_shows_the_local_answer_with_a_note(
    settings: Settings, proxy: FaultProxy, fault: str, kind: str
) -> None:
    proxy.default = fault
    cloud = fast(
        settings,
        cloud_base_url=proxy.base_url,
        cloud_model=resolve_model(settings.local_model, settings.model_cache_dir),
        cloud_max_retries=1,
        cloud_timeout_s=1.0,
    )
    events, finished = run_turn(comparison(cloud, AlwaysPolicy(), 0.5), PROMPT)
    decision = finished.record.decision
    on = finished.record.answer("on")
    assert decision.handed_off and decision.blocked_by == "cloud_error"
    assert on.source == "local" and on.error_kind == kind and on.retries == (1 if kind != "malformed" else 0)
    assert finished.on_text == finished.off_text
    assert finished.notes == [cloud_failed_note(kind)]
    assert "".join(e.text for e in events if isinstance(e, Delta) and e.arm == "on") == finished.on_text


def test_pre_policy_cloud_failure_with_different_histories_generates_a_local_fallback(
    settings: Settings, proxy: FaultProxy
) -> None:
    proxy.default = "503"
    cloud = fast(
        settings,
        cloud_base_url=proxy.base_url,
        cloud_model="unused",
        cloud_max_retries=0,
    )
    live = comparison(cloud, AlwaysPolicy(), 0.5)
    history_on = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello from the cloud."}]
    events = list(live.run(PROMPT, [], history_on))
    finished = events[-1]
    assert finished.record.decision.blocked_by == "cloud_error"
    assert finished.on_text and finished.record.answer("on").source == "local"
    assert texts(events)["on"] == finished.on_text
