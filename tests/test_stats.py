"""Statistics on hand-made data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from feedback import stats


def test_win_rate_counts_only_decided_votes() -> None:
    assert stats.win_rate(3, 1) == 0.75
    assert stats.win_rate(0, 0) is None


def test_bootstrap_ci_covers_the_true_win_rate_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    truth, n, trials = 0.6, 400, 300
    covered = 0
    for trial in range(trials):
        wins = int(rng.binomial(n, truth))
        low, high = stats.bootstrap_ci(wins, n - wins, rounds=400, seed=trial)
        covered += low <= truth <= high
    assert 0.91 <= covered / trials <= 0.98


def test_bootstrap_ci_is_repeatable_with_a_seed_and_narrows_with_more_votes() -> None:
    assert stats.bootstrap_ci(60, 40, rounds=200, seed=3) == stats.bootstrap_ci(60, 40, rounds=200, seed=3)
    small = stats.bootstrap_ci(6, 4, rounds=500, seed=0)
    large = stats.bootstrap_ci(600, 400, rounds=500, seed=0)
    assert (small[1] - small[0]) > 3 * (large[1] - large[0])
    assert stats.bootstrap_ci(0, 0) is None


def test_auroc_of_a_perfect_and_a_useless_score() -> None:
    assert stats.auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert stats.auroc([0.5, 0.5, 0.5, 0.5], [False, True, False, True]) == 0.5
    assert stats.auroc([0.1, 0.2], [True, True]) is None


def _battles(rng: np.random.Generator, strengths: dict[str, float], n: int, tie_rate: float = 0.1) -> pd.DataFrame:
    names = list(strengths)
    rows = []
    for _ in range(n):
        a, b = rng.choice(len(names), size=2, replace=False)
        p = 1 / (1 + 10 ** ((strengths[names[b]] - strengths[names[a]]) / 400))
        roll = rng.random()
        winner = "tie" if roll < tie_rate else ("model_a" if rng.random() < p else "model_b")
        rows.append((names[a], names[b], winner))
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])


def test_two_arm_bradley_terry_matches_the_log_odds_of_the_win_rate() -> None:
    battles = pd.DataFrame(
        {
            "model_a": ["on"] * 100,
            "model_b": ["off"] * 100,
            "winner": ["model_a"] * 60 + ["model_b"] * 30 + ["tie"] * 10,
        }
    )
    ratings = stats.compute_bt(battles)
    p = (60 + 5) / 100  # ties count half
    assert ratings["on"] - ratings["off"] == pytest.approx(400 * math.log10(p / (1 - p)), abs=0.5)


def test_bradley_terry_equals_a_direct_maximum_likelihood_fit() -> None:
    battles = _battles(np.random.default_rng(7), {"x": 1100, "y": 1000, "z": 900}, 600)
    names = sorted(set(battles.model_a) | set(battles.model_b))
    index = {n: i for i, n in enumerate(names)}
    a = battles.model_a.map(index).to_numpy()
    b = battles.model_b.map(index).to_numpy()
    y = battles.winner.map({"model_a": 1.0, "model_b": 0.0, "tie": 0.5}).to_numpy()

    def nll(free: np.ndarray) -> float:  # rating of the first model pinned to 0
        r = np.concatenate([[0.0], free])
        p = 1 / (1 + np.exp(-(r[a] - r[b]) * math.log(10)))
        return -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum()

    direct = np.concatenate(
        [[0.0], minimize(nll, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10}).x]
    )
    direct = (direct - direct.mean()) * 400 + 1000
    ratings = stats.compute_bt(battles)
    for name in names:
        assert ratings[name] == pytest.approx(direct[index[name]], abs=0.5)
    assert list(ratings.index) == ["x", "y", "z"]


def test_leaderboard_has_bootstrap_intervals_around_each_rating() -> None:
    battles = _battles(np.random.default_rng(2), {"a": 1150, "b": 1000, "c": 1000, "d": 850}, 1500)
    board = stats.leaderboard(battles, rounds=50, seed=0)
    assert list(board.arm[[0, 3]]) == ["a", "d"]
    assert (board.lower <= board.rating).all() and (board.rating <= board.upper).all()
    assert board.battles.sum() == 3000
    again = stats.leaderboard(battles, rounds=50, seed=0)
    pd.testing.assert_frame_equal(board, again)


def test_pairwise_agreement_over_repeated_prompts() -> None:
    # verdict counts per prompt [2, 1], [0, 2], [1]: one entry per (prompt, verdict) seen
    repeated, pairs, agreement = stats.pairwise_agreement_cells(np.array([0, 0, 1, 2]), np.array([2, 1, 2, 1]))
    assert repeated == 2 and pairs == 3 + 1 and agreement == pytest.approx(2 / 4)


def test_pairwise_agreement_from_cells_is_the_agreement_of_repeated_items() -> None:
    # items 0, 1, 2 as above; item 3 rated once adds no pair
    item, n = np.array([0, 0, 1, 2, 3]), np.array([2, 1, 2, 1, 1])
    assert stats.pairwise_agreement_cells(item, n) == (2, 4, 2 / 4)
    assert stats.pairwise_agreement_cells(np.zeros(0, dtype=int), np.zeros(0, dtype=int)) == (0, 0, None)


def test_weighted_bootstrap_mean_ci_contains_the_weighted_mean() -> None:
    values, weights = np.array([1.0, 0.0, 1.0, 0.0] * 50), np.array([3.0, 1.0, 3.0, 1.0] * 50)
    low, high = stats.bootstrap_mean_ci(values, weights=weights, rounds=300, seed=0)
    assert low < 0.75 < high
