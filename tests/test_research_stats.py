"""Research statistics on simulated data of known truth: cluster bootstrap, style control, agreement,
calibration and RouteLLM's cost-quality metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from feedback import stats


def _simulate(rng: np.random.Generator, people: int, sigma: float, truth: float) -> tuple[np.ndarray, np.ndarray]:
    """Decided votes of ``people`` participants (2–14 each) whose own win probability varies by ``sigma`` (logit)."""
    own = expit(logit(truth) + rng.normal(0, sigma, people)) if sigma else np.full(people, truth)
    votes = rng.integers(2, 15, people)
    participant = np.repeat(np.arange(people), votes)
    won = rng.random(participant.size) < own[participant]
    return participant, won


def _population_truth(sigma: float, truth: float) -> float:
    """The ratio Σ wins / Σ decided in an infinite population (votes per person independent of taste)."""
    if not sigma:
        return truth
    z = np.random.default_rng(123).normal(0, sigma, 2_000_000)
    return float(expit(logit(truth) + z).mean())


@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_participant_bootstrap_covers_the_truth_at_least_93_percent_with_and_without_heterogeneity(
    sigma: float,
) -> None:
    rng = np.random.default_rng(7)
    truth = _population_truth(sigma, 0.62)
    sets, covered, vote_covered = 240, 0, 0
    for trial in range(sets):
        participant, won = _simulate(rng, 120, sigma, 0.62)
        result = stats.cluster_win_rate(participant, won, rounds=300, seed=trial)
        low, high = result["ci95"]
        covered += low <= truth <= high
        assert result["participants"] == 120 and result["decided"] == participant.size
        vote_low, vote_high = stats.bootstrap_ci(int(won.sum()), int((~won).sum()), rounds=300, seed=trial)
        vote_covered += vote_low <= truth <= vote_high
    assert covered / sets >= 0.93, covered / sets
    if sigma:  # resampling votes ignores who cast them: too narrow when people differ
        assert vote_covered / sets < covered / sets


def _style_battles(rng: np.random.Generator, n: int, p_substance: float, length_pref: float):
    """Decided votes where the handoff answer is longer and voters prefer longer answers by ``length_pref``."""
    on_is_a = rng.random(n) < 0.5
    on_tokens = rng.integers(150, 400, n)
    off_tokens = rng.integers(20, 200, n)
    a = np.where(on_is_a, on_tokens, off_tokens)
    b = np.where(on_is_a, off_tokens, on_tokens)
    raw_diff = (a - b) / (a + b + 1)
    arm = np.where(on_is_a, 1.0, -1.0) * logit(p_substance)
    a_won = rng.random(n) < expit(arm + length_pref * raw_diff)
    style_a = np.column_stack([a, rng.integers(0, 3, n), rng.integers(0, 5, n), rng.integers(0, 4, n), np.zeros(n)])
    style_b = np.column_stack([b, rng.integers(0, 3, n), rng.integers(0, 5, n), rng.integers(0, 4, n), np.zeros(n)])
    participant = rng.integers(0, n // 6, n)
    return on_is_a, a_won, participant, stats.style_differences(style_a, style_b)


def test_style_control_removes_a_planted_length_preference() -> None:
    rng = np.random.default_rng(3)
    on_is_a, a_won, participant, features = _style_battles(rng, 3000, p_substance=0.5, length_pref=3.0)
    raw = stats.handoff_effect(stats.effect_design(on_is_a), a_won, participant, rounds=60, seed=1)
    controlled = stats.handoff_effect(stats.effect_design(on_is_a, features), a_won, participant, rounds=60, seed=1)
    assert raw["ci95"][0] > 0.55  # uncontrolled, longer looks better
    low, high = controlled["ci95"]
    assert low <= 0.5 <= high  # at equal style the planted truth (no real advantage) is covered
    tokens_low, _ = controlled["coefficient_ci95"][0]
    assert tokens_low > 0  # the length coefficient carries the preference
    assert 0.8 < stats.style_explained(raw["win_probability"], controlled["win_probability"]) < 1.2


def test_style_control_keeps_a_real_advantage_when_voters_ignore_length() -> None:
    rng = np.random.default_rng(4)
    on_is_a, a_won, participant, features = _style_battles(rng, 3000, p_substance=0.65, length_pref=0.0)
    controlled = stats.handoff_effect(stats.effect_design(on_is_a, features), a_won, participant, rounds=60, seed=2)
    low, high = controlled["ci95"]
    assert low <= 0.65 <= high


def test_cohen_kappa_of_a_planted_judge_equals_its_known_value() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    human = rng.choice(["on", "off"], n, p=[0.6, 0.4])
    agree = rng.random(n) < 0.8  # the judge copies the human 80% of the time, else flips
    judge = np.where(agree, human, np.where(human == "on", "off", "on"))
    participant = rng.integers(0, 500, n)
    result = stats.agreement(human, judge, participant, rounds=200, seed=0)
    # known κ: p_o = 0.8; judge shares: on 0.6·0.8 + 0.4·0.2 = 0.56; p_e = 0.6·0.56 + 0.4·0.44 = 0.512
    known_kappa = (0.8 - 0.512) / (1 - 0.512)
    assert result["agreement_ci95"][0] <= 0.8 <= result["agreement_ci95"][1]
    assert result["kappa_ci95"][0] <= known_kappa <= result["kappa_ci95"][1]
    assert stats.cohen_kappa(np.array(["a", "b"]), np.array(["a", "b"])) == 1.0


def test_calibrated_threshold_hits_the_target_rate_on_held_out_turns() -> None:
    rng = np.random.default_rng(6)
    scores = rng.beta(2, 5, 40_000)
    train, held_out = scores[:20_000], scores[20_000:]
    for target in (0.1, 0.3, 0.5):
        t = stats.calibrate_threshold(train, target)
        assert abs((held_out >= t).mean() - target) <= 0.02
        assert (train >= t).mean() == pytest.approx(target, abs=1 / 20_000)


def test_routellm_metrics_on_a_known_curve() -> None:
    rates = np.linspace(0, 1, 11)
    gains = np.sqrt(rates) * 0.2  # concave: the first handoffs recover most of the gain
    metrics = stats.performance_gap_recovered(rates, gains)
    assert metrics["full_gain"] == pytest.approx(0.2)
    assert metrics["cpt50"] == pytest.approx(0.25, abs=0.02)  # sqrt(r) = 0.5
    assert metrics["cpt80"] == pytest.approx(0.64, abs=0.03)
    assert metrics["apgr"] == pytest.approx(2 / 3, abs=0.02)  # ∫ sqrt(r) dr
    assert stats.performance_gap_recovered(rates, -gains)["cpt50"] is None  # handoff never helps


def test_numbers_are_shown_to_the_precision_their_interval_supports() -> None:
    assert stats.shown(0.631234, (0.61, 0.65)) == 0.63
    assert stats.shown(1026.6431, (1010.0, 1040.0)) == 1030
    assert stats.shown(1099.1516) == 1100
    assert stats.shown(0.012345) == 0.0123
    assert stats.shown(7) == 7 and stats.shown(None) is None
    assert stats.shown_text(0.6953, (0.67, 0.72)) == "0.70" and stats.shown_text(1026.6, (1010.0, 1040.0)) == "1030"


def _contextual_problem(rng: np.random.Generator, n: int, features: int):
    on_is_a = rng.random(n) < 0.5
    matchups = np.where(on_is_a[:, None], [[0, 1]], [[1, 0]])
    x = rng.normal(0, 1, (n, features))
    logits = np.where(on_is_a, 0.4, -0.4) + x @ rng.normal(0, 0.5, features)
    outcomes = (rng.random(n) < expit(logits)).astype(float)
    weights = rng.multinomial(n, np.full(n, 1 / n)).astype(float)  # a bootstrap round's counts
    return matchups, x, outcomes, weights


@pytest.mark.parametrize("features", [0, 1, 5])
def test_newton_fit_of_the_contextual_bradley_terry_model_is_scipys_fit_to_tolerance(features: int) -> None:
    from scipy.optimize import minimize

    rng = np.random.default_rng(features)
    matchups, x, outcomes, weights = _contextual_problem(rng, 3000, features)
    alpha = np.log(10.0)
    design = stats._contextual_design(matchups, x, 2, alpha)
    start = stats.fit_contextual_bt(matchups, x, outcomes, 2, alpha=alpha)  # the point estimate, unweighted
    newton = stats.fit_contextual_bt_newton(design, outcomes, weights, start)
    assert newton is not None
    # scipy's L-BFGS on the same reweighted loss, run to a far tighter tolerance than the report's
    tight = minimize(
        stats._contextual_loss,
        np.zeros(2 + features),
        args=(2, matchups, x, outcomes, weights, alpha, 0.5),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10_000, "gtol": 1e-11, "ftol": 1e-15},
    ).x
    np.testing.assert_allclose(newton, tight, atol=1e-6)
    _, grad = stats._contextual_loss(newton, 2, matchups, x, outcomes, weights, alpha, 0.5)
    assert np.abs(grad).max() < 1e-8  # the optimum (the report's L-BFGS stops at |grad| ~ 1e-2 on 4,000 votes)
    # the report's own L-BFGS fit agrees to its tolerance
    lbfgs = stats.fit_contextual_bt(matchups, x, outcomes, 2, weights=weights, alpha=alpha)
    np.testing.assert_allclose(newton, lbfgs, atol=5e-3)


def test_handoff_effect_bootstrap_without_covariates_fits_four_distinct_rows_like_every_vote() -> None:
    rng = np.random.default_rng(11)
    matchups, _, outcomes, _ = _contextual_problem(rng, 2000, 0)
    on_is_a = matchups[:, 0] == 0
    participant = rng.integers(0, 300, 2000)
    folded = stats.handoff_effect(stats.effect_design(on_is_a), outcomes, participant, rounds=40, seed=3)
    # the same rounds, each fitted over every vote with the participant's draw count as its weight
    codes, people = pd.factorize(pd.Series(participant))
    design = stats._contextual_design(matchups, np.zeros((2000, 0)), 2, np.log(10.0))
    start = stats.fit_contextual_bt(matchups, np.zeros((2000, 0)), outcomes, 2)
    probs = [
        expit(np.log(10.0) * np.subtract(*stats.fit_contextual_bt_newton(design, outcomes, w[codes], start)[:2]))
        for w in stats.participant_draws(len(people), rounds=40, seed=3)
    ]
    np.testing.assert_allclose(folded["ci95"], stats.percentile_ci(np.array(probs)), atol=1e-12)


def test_handoff_effect_rounds_in_threads_are_those_of_one_thread_to_the_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(12)
    matchups, x, outcomes, _ = _contextual_problem(rng, 3000, 3)
    participant = rng.integers(0, 400, 3000)
    design = stats.effect_design(matchups[:, 0] == 0, x)
    threaded = stats.handoff_effect(design, outcomes, participant, rounds=30, seed=4)
    monkeypatch.setattr(stats, "bootstrap_threads", lambda: 1)
    assert stats.handoff_effect(design, outcomes, participant, rounds=30, seed=4) == threaded


def test_participant_draws_resample_participants_with_replacement_the_same_rows_each_time() -> None:
    draws = stats.participant_draws(500, rounds=30, seed=9)
    first = np.array(list(draws))
    again = np.concatenate(list(stats.ParticipantDraws(500, 30, 9, block=7).blocks()))  # other blocks, same rows
    rng = np.random.default_rng(9)
    whole = np.array([np.bincount(rng.integers(0, 500, 500), minlength=500) for _ in range(30)], dtype=np.float64)
    np.testing.assert_array_equal(first, whole)
    np.testing.assert_array_equal(again, whole)
    assert first.dtype == np.float64 and (first.sum(axis=1) == 500).all()  # each round: 500 people drawn
    # a participant's count is Binomial(500, 1/500): mean 1, variance ~1 (as numpy's multinomial gives)
    many = np.array(list(stats.participant_draws(500, rounds=400, seed=1)))
    assert abs(many.mean() - 1) < 1e-12 and abs(many.var() - (1 - 1 / 500)) < 0.02


def test_cluster_auroc_reweights_one_sort_to_the_same_bits_as_sorting_every_round() -> None:
    rng = np.random.default_rng(12)
    n = 3000
    labels = rng.random(n) < 0.4
    scores = np.round(rng.normal(labels * 0.3, 1.0), 1)  # rounded: many ties
    participant = rng.integers(0, 400, n)
    result = stats.cluster_auroc(scores, labels, participant, rounds=50, seed=5)
    codes, people = pd.factorize(pd.Series(participant))
    each = [
        stats.weighted_auroc(scores, labels, w[codes]) for w in stats.participant_draws(len(people), rounds=50, seed=5)
    ]
    assert result["ci95"] == list(stats.percentile_ci(np.array(each)))  # exact: integer weights, exact sums
    assert result["auroc"] == stats.weighted_auroc(scores, labels, np.ones(n))


def test_cluster_bootstrap_bt_on_counts_is_the_per_battle_bootstrap() -> None:
    """Counts per (participant, matchup row) in a sparse matrix give each round the weights that summing
    every battle row's draws gives (whole numbers: the same bits), so the same fits."""
    rng = np.random.default_rng(3)
    arms = ["a", "b", "c"]
    rows = []
    for person in rng.integers(0, 60, 900):
        x, y = rng.choice(3, 2, replace=False)
        rows.append((int(person), arms[x], arms[y], rng.choice(["model_a", "model_b", "tie"])))
    battles = pd.DataFrame(rows, columns=["participant", "model_a", "model_b", "winner"])
    battles = battles.groupby(["participant", "model_a", "model_b", "winner"]).size().reset_index(name="n")
    ratings, boot, people = stats.cluster_bootstrap_bt(battles, rounds=30, seed=4)
    # the per-battle-row bootstrap as it was written before the counts
    codes, _ = pd.factorize(battles["participant"])
    matchups, outcomes, models, _ = stats.preprocess_for_bt(battles)
    _, inverse = np.unique(np.column_stack([*stats.preprocess_rows(battles, models)]), axis=0, return_inverse=True)
    inverse, n = inverse.reshape(-1), battles["n"].to_numpy(np.float64)
    expected = [
        stats._scale(
            stats.fit_bt(
                matchups,
                outcomes,
                np.bincount(inverse, weights=n * w[codes], minlength=len(outcomes)),
                len(models),
                np.log(10.0),
            ),
            400.0,
            1000.0,
        )
        for w in stats.participant_draws(people, rounds=30, seed=4)
    ]
    np.testing.assert_array_equal(boot.to_numpy(), np.array(expected))
    assert people == battles["participant"].nunique() and list(ratings.index) == sorted(
        ratings.index, key=lambda arm: -ratings[arm]
    )
