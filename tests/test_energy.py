"""Energy per answer: EcoLogits for cloud answers, measured time × device power for local ones,
stored with each answer and summed per 1,000 prompts for the overview and the report."""

from __future__ import annotations

from decimal import Decimal

import pytest

from db.analytics import Scope, energy_use, overview
from db.session import session_scope
from feedback.energy import annotate, cloud_energy, local_energy
from feedback.records import AnswerRecord
from feedback.units import format_usd, format_wh
from tests.factories import make_event
from tests.organizer_data import Round, add_rounds


def test_local_energy_is_measured_time_times_device_power() -> None:
    estimate = local_energy(compute_s=36.0, watts=50.0)
    assert estimate.wh == pytest.approx(0.5)  # 36 s × 50 W = 1800 J = 0.5 Wh
    assert estimate.method == "measured time x 50 W"


def test_cloud_energy_comes_from_ecologits_and_grows_with_tokens_and_model_size() -> None:
    small = cloud_energy("gpt-4o-mini", 100, 2.0)
    longer = cloud_energy("gpt-4o-mini", 1000, 2.0)
    larger = cloud_energy("gpt-4.1", 100, 2.0)
    assert small.method.startswith("ecologits ") and small.method.endswith("openai/gpt-4o-mini")
    assert 0 < small.wh < longer.wh
    assert small.wh < larger.wh


def test_an_unlisted_cloud_model_is_estimated_as_the_fallback_model_and_says_so() -> None:
    unlisted = cloud_energy("smollm2-standin", 100, 2.0, fallback_model="gpt-4o-mini")
    assert unlisted.wh == cloud_energy("gpt-4o-mini", 100, 2.0).wh
    assert "gpt-4o-mini (for unlisted smollm2-standin)" in unlisted.method


def test_annotate_sets_energy_on_answers_and_leaves_failed_cloud_calls_without() -> None:
    local = AnswerRecord(arm="off", source="local", text="hi", model="smol", latency_ms=7200.0)
    cloud = AnswerRecord(arm="on", source="cloud", text="x" * 400, model="gpt-4o-mini", latency_ms=900.0)
    failed = AnswerRecord(arm="on", source="cloud", text="", model="gpt-4o-mini", latency_ms=5.0, error_kind="timeout")
    for answer in (local, cloud, failed):
        annotate(answer, local_watts=10.0, provider="openai", fallback_model="gpt-4.1-mini")
    assert local.energy_wh == pytest.approx(0.02) and local.energy_method == "measured time x 10 W"
    assert cloud.energy_wh == cloud_energy("gpt-4o-mini", 100, 0.9).wh  # no token count: 4 characters a token
    assert (failed.energy_wh, failed.energy_method) == (None, None)


def test_energy_and_cost_are_summed_per_1000_prompts(db_url: str) -> None:
    event = make_event(db_url, "ENERGY", "sf")
    add_rounds(
        db_url,
        event,
        [
            Round("on", handed_off=True, cost=Decimal("0.002"), energy_off=0.01, energy_on=0.3),
            Round("off", energy_off=0.03, energy_on=0.03),
            Round("tie"),  # no estimates (stored before energy was recorded): left out
        ],
    )
    with session_scope(db_url) as session:
        use = energy_use(session, Scope(event_ids=(event,)))
        assert overview(session, Scope(event_ids=(event,))).energy == use
    assert use.prompts == 2
    assert use.local_wh == pytest.approx(0.04)
    assert use.handoff_wh == pytest.approx(0.3 + 0.01 + 0.03)  # the cloud answer plus the local draft before it
    assert use.handoff_cost == Decimal("0.002")
    assert use.per_1000(use.handoff_wh) == pytest.approx(170.0)
    assert use.per_1000(use.handoff_cost) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("wh", "text"), [(0.000123, "0.12 mWh"), (0.0123, "12 mWh"), (1.234, "1.2 Wh"), (12.3, "12 Wh"), (4567, "4.6 kWh")]
)
def test_energy_is_shown_with_two_significant_figures_and_a_unit(wh: float, text: str) -> None:
    assert format_wh(wh) == text


@pytest.mark.parametrize(("usd", "text"), [(0, "$0.00"), (0.000123, "$0.00012"), (0.5, "$0.50"), (1234.5, "$1,234.50")])
def test_money_is_shown_as_a_person_reads_it(usd: float, text: str) -> None:
    assert format_usd(usd) == text
