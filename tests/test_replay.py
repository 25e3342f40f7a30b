"""Offline replay: the live threshold reproduces the live run exactly; other thresholds follow the
stored scores, votes and inverse-propensity-weighted shadow answers."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from typer.testing import CliRunner

from db.models import Event
from db.session import session_scope
from db.vocabulary import winner_pane
from feedback.capture import join_event, record_turn, start_conversation
from feedback.export import ExportFilters
from feedback.records import AnswerRecord, DecisionRecord, TurnRecord
from feedback.replay import TurnTable, load_turns, replay, replay_database
from feedback.votes import VoteSubmission, submit_vote
from playground import settings as settings_module
from playground.handoff.base import PolicyInput
from playground.handoff.policies import ConfidencePolicy, decide
from tests.factories import make_event

LIVE = 0.5
CLOUD_COST, SHADOW_COST, PROPENSITY = Decimal("0.002"), Decimal("0.001"), 0.5


def store_run(url: str, turns: int = 40, seed: int = 0) -> dict[str, float]:
    """A stored run: the real confidence policy decides on token statistics; votes follow."""
    rng = np.random.default_rng(seed)
    handed, costs, shadows = 0, Decimal(0), Decimal(0)
    event_id = make_event(url, "RUN-1", "sf")
    with session_scope(url) as session:
        participant = join_event(session, session.get(Event, event_id))
        conversation_ids = []
        for i in range(turns):
            n = int(rng.integers(5, 40))
            data = PolicyInput(
                [{"role": "user", "content": f"q{i}"}],
                "draft",
                list(-rng.exponential(rng.uniform(0.2, 3), n)),
                list(rng.uniform(0, rng.uniform(0.5, 5), n)),
            )
            decision = decide(ConfidencePolicy(), LIVE, data)
            shadow = not decision.handoff and i % 2 == 0
            answers = [AnswerRecord("off", "local", f"local {i}", "SmolLM2-135M-Instruct")]
            if decision.handoff:
                answers.append(AnswerRecord("on", "cloud", f"cloud {i}", "gpt-4.1-mini", cost=CLOUD_COST))
                handed, costs = handed + 1, costs + CLOUD_COST
            else:
                answers.append(AnswerRecord("on", "local", f"local {i}", "SmolLM2-135M-Instruct"))
            if shadow:
                answers.append(AnswerRecord("shadow", "cloud", f"shadow {i}", "gpt-4.1-mini", cost=SHADOW_COST))
                shadows += SHADOW_COST
            record = TurnRecord(
                prompt=f"q{i}",
                language="en",
                decision=DecisionRecord(
                    decision.policy,
                    decision.version,
                    decision.stage,
                    decision.threshold,
                    decision.score,
                    decision.handoff,
                    decision.latency_ms,
                    decision.signals,
                    shadow_propensity=None if decision.handoff else PROPENSITY,
                ),
                answers=answers,
            )
            conversation = start_conversation(session, participant)
            record_turn(session, conversation.id, record)
            conversation_ids.append((conversation.id, conversation.handoff_side, decision.handoff, i))
    wins = losses = 0
    for conversation_id, side, handoff, i in conversation_ids:
        if handoff:
            on_wins = i % 3 != 0
            wins, losses = wins + on_wins, losses + (not on_wins)
            winner = winner_pane("on" if on_wins else "off", side)
        else:
            winner = "identical"
        with session_scope(url) as session:
            submit_vote(session, VoteSubmission(f"v{i}", conversation_id, winner))
    return {
        "turns": turns,
        "handed": handed,
        "cost": float(costs),
        "shadow": float(shadows),
        "wins": wins,
        "losses": losses,
    }


def test_live_threshold_reproduces_the_live_handoff_rate_exactly(db_url: str) -> None:
    run = store_run(db_url)
    assert 0 < run["handed"] < run["turns"]  # the run exercised both decisions
    result = replay_database(db_url, ExportFilters(), thresholds=[0.0, 1.01])
    live = next(p for p in result.points if p.threshold == LIVE)
    assert result.live_thresholds == [LIVE]
    assert live.handoff_rate == result.live_handoff_rate == run["handed"] / run["turns"]
    assert (live.wins, live.losses, live.imputed_share) == (run["wins"], run["losses"], 0.0)
    assert live.cost_per_1000 == pytest.approx(run["cost"] / run["turns"] * 1000)


def test_lower_thresholds_add_shadow_costs_weighted_by_inverse_propensity(db_url: str) -> None:
    run = store_run(db_url, seed=1)
    points = {p.threshold: p for p in replay_database(db_url, ExportFilters(), thresholds=[0.0, 1.01]).points}
    assert points[0.0].handoff_rate == 1.0
    assert points[0.0].cost_per_1000 == pytest.approx((run["cost"] + run["shadow"] / PROPENSITY) / run["turns"] * 1000)
    assert points[1.01].handoff_rate == 0.0 and points[1.01].wins == 0 and points[1.01].cost_per_1000 == 0


def _table(scores: list[float], handed: list[bool], votes: list[str], shadow: list[bool]) -> TurnTable:
    n = len(scores)
    return TurnTable(
        live_policy=np.array(["confidence"] * n, dtype=object),
        live_threshold=np.full(n, 0.5),
        live_score=np.array(scores),
        handed_off=np.array(handed),
        scores={"router": np.array(scores[::-1])},
        propensity=np.where(np.array(handed), np.nan, 0.25),
        has_shadow=np.array(shadow),
        on_cost=np.where(np.array(handed), 1.0, 0.0),
        shadow_cost=np.where(np.array(shadow), 1.0, 0.0),
        vote=np.array(votes, dtype=object),
    )


def test_unseen_handoffs_are_imputed_from_similar_scores_and_weighted_by_1_over_propensity() -> None:
    # two live handoffs at 0.52 / 0.58 (bin 10/11): both won; a kept-local turn at 0.47 with a shadow
    table = _table(
        [0.52, 0.58, 0.47, 0.1],
        [True, True, False, False],
        ["on", "on", "identical", "identical"],
        [False, False, True, False],
    )
    result = replay(table, "confidence", [0.45, 0.5])
    low, live = result.points
    assert (live.wins, live.losses, live.handoff_rate) == (2, 0, 0.5)
    assert low.wins == pytest.approx(2 + 1 / 0.25) and low.imputed_share == pytest.approx(4 / 6)
    assert low.cost_per_1000 == pytest.approx((2 + 1 / 0.25) / 4 * 1000)


def test_other_policies_replay_from_their_stored_scores() -> None:
    table = _table([0.9, 0.8, 0.2, 0.1], [True, True, False, False], ["on", "off", "tie", "tie"], [False] * 4)
    result = replay(table, "router", [0.5])
    assert result.live_handoff_rate is None and result.points[0].handoff_rate == 0.5


def test_recommended_threshold_is_the_cheapest_keeping_80_percent_of_the_best_gain(sqlite_url: str) -> None:
    store_run(sqlite_url, seed=2)
    result = replay_database(sqlite_url, ExportFilters())
    best = result.recommended
    top = max(p.net_gain for p in result.points)
    assert best is not None and best.net_gain >= 0.8 * top
    assert all(p.cost_per_1000 >= best.cost_per_1000 for p in result.points if p.net_gain >= 0.8 * top)
    assert len(load_turns(sqlite_url, ExportFilters(region="apac"))) == 0


def test_replay_command_prints_the_live_rate(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    run = store_run(sqlite_url)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("HANDOFF_CONFIG", str(tmp_path / "none.toml"))
    settings_module.get_settings.cache_clear()
    from playground.cli import app

    try:
        output = CliRunner().invoke(app, ["replay", "--threshold", "0.5"]).output
        assert f"live handoff rate {run['handed'] / run['turns']:.4f}" in output and "<- live" in output
        assert "Give --threshold" in CliRunner().invoke(app, ["replay"]).output
    finally:
        settings_module.get_settings.cache_clear()


def test_calibration_hits_the_target_handoff_rate_on_held_out_turns(sqlite_url: str) -> None:
    from feedback.demo_data import generate
    from feedback.replay import TurnTable, calibrate

    generate(sqlite_url, 4000, seed=31)
    table = load_turns(sqlite_url, ExportFilters())
    half = np.arange(len(table)) % 2 == 0

    def part(mask: np.ndarray) -> TurnTable:
        return TurnTable(
            **{
                name: (value[mask] if isinstance(value, np.ndarray) else {k: v[mask] for k, v in value.items()})
                for name, value in vars(table).items()
            }
        )

    train, held_out = part(half), part(~half)
    for target in (0.2, 0.3, 0.6):
        chosen = calibrate(train, "confidence", target_handoff_rate=target)
        assert abs((held_out.score("confidence") >= chosen.threshold).mean() - target) <= 0.02
    budget = calibrate(train, "confidence", budget_per_1000=0.2)
    assert budget.point.cost_per_1000 <= 0.2
    cheaper = calibrate(train, "confidence", budget_per_1000=0.1)
    assert cheaper.threshold >= budget.threshold


def test_replay_command_calibrates_to_a_share(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from feedback.demo_data import generate

    generate(sqlite_url, 300, seed=32)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("HANDOFF_CONFIG", str(tmp_path / "none.toml"))
    settings_module.get_settings.cache_clear()
    from playground.cli import app

    try:
        result = CliRunner().invoke(app, ["replay", "--target-handoff-rate", "0.3"])
        assert result.exit_code == 0 and "target handoff rate 0.3: threshold" in result.output
        assert "handoff rate 0.3" in result.output
        result = CliRunner().invoke(app, ["replay", "--budget-per-1000", "0.1"])
        assert result.exit_code == 0 and "cloud cost 0.1 per 1,000 prompts" in result.output
    finally:
        settings_module.get_settings.cache_clear()


def test_the_reports_streamed_replay_is_the_replay_of_the_loaded_table(sqlite_url: str) -> None:
    """``replay_summary`` sums the turns into cells as it reads them, a chunk at a time: the curve of the
    loaded table's replay at every threshold (sums in another order: equal to 1e-12), the live figures
    exactly, and each policy's scores on the decided handed-off turns for their AUROC."""
    from feedback.demo_data import generate
    from feedback.replay import SWEEP, default_policy, replay_summary

    generate(sqlite_url, 1200, seed=31)
    table = load_turns(sqlite_url, ExportFilters())
    policy = default_policy(table)
    expected = replay(table, policy, [*SWEEP, *set(table.live_threshold.tolist())])
    got = replay_summary(sqlite_url, ExportFilters())
    assert got.turns == len(table) and got.result is not None
    result = got.result
    assert (result.policy, result.turns, result.voted) == (expected.policy, expected.turns, expected.voted)
    assert result.live_handoff_rate == expected.live_handoff_rate
    assert result.live_thresholds == expected.live_thresholds
    assert [p.threshold for p in result.points] == [p.threshold for p in expected.points]
    for ours, theirs in zip(result.points, expected.points, strict=True):
        for name in ("handoff_rate", "wins", "losses", "win_rate", "net_gain", "cost_per_1000", "imputed_share"):
            theirs_value = getattr(theirs, name)
            assert getattr(ours, name) == (
                None if theirs_value is None else pytest.approx(theirs_value, rel=1e-12, abs=1e-15)
            ), name
    assert result.recommended.threshold == expected.recommended.threshold
    decided = table.handed_off & np.isin(table.vote, ["on", "off"])
    names = sorted({*table.scores, *set(table.live_policy.astype(str))})
    assert list(got.decided_scores) == names
    for name in names:
        np.testing.assert_array_equal(got.decided_scores[name], table.score(name)[decided])
    np.testing.assert_array_equal(got.decided_won, table.vote[decided] == "on")


def test_the_reports_replay_of_an_empty_selection_is_empty(sqlite_url: str) -> None:
    from feedback.replay import replay_summary

    got = replay_summary(sqlite_url, ExportFilters())
    assert got.turns == 0 and got.result is None and got.decided_scores == {}


def test_the_reports_replay_reads_the_same_numbers_as_arrow_columns_as_row_by_row(sqlite_url: str) -> None:
    """On a SQLite file the turns come as Arrow columns (scores by SQLite's ``json_extract``, costs as the
    Numeric column returns them): the same cells, curve and per-turn scores as parsing each row, to the bit."""
    from feedback.demo_data import generate
    from feedback.replay import _turn_arrow, replay_summary

    generate(sqlite_url, 1200, seed=32)
    chunks = _turn_arrow(sqlite_url, ExportFilters(), [])
    assert chunks is not None
    read = sum(len(columns[0]) for columns, _ in chunks)
    arrow = replay_summary(sqlite_url, ExportFilters())
    rows = replay_summary(sqlite_url, ExportFilters(), arrow=False)
    assert arrow.turns == rows.turns == read and repr(arrow.result) == repr(rows.result)  # every point, every digit
    assert list(arrow.decided_scores) == list(rows.decided_scores)
    for name, scores in rows.decided_scores.items():
        np.testing.assert_array_equal(arrow.decided_scores[name], scores)
    np.testing.assert_array_equal(arrow.decided_won, rows.decided_won)


def test_stored_scores_are_read_by_arrow_and_per_turn_alike() -> None:
    """A chunk's ``signals["scores"]`` objects: Arrow's JSON reader where every score is a number or null, else
    per turn (a score that is not a number, a scores value that is not an object, read as nan)."""
    import pyarrow as pa

    from feedback.replay import _stored_scores

    got = _stored_scores(pa.array(['{"a": 0.1, "b": 1}', '{"a": null}', "{}"], pa.string()))
    assert set(got) == {"a", "b"}
    np.testing.assert_array_equal(got["a"], [0.1, np.nan, np.nan])
    np.testing.assert_array_equal(got["b"], [1.0, np.nan, np.nan])
    odd = _stored_scores(pa.array(['{"a": 0.1, "b": {"x": 1}}', "5", '{"b": 2}'], pa.string()))
    np.testing.assert_array_equal(odd["a"], [0.1, np.nan, np.nan])
    np.testing.assert_array_equal(odd["b"], [np.nan, np.nan, 2.0])
