"""Statistics as pure functions on counts, arrays or a battles frame; seed and rounds are arguments.

The Bradley-Terry fit follows FastChat's ``serve/monitor/rating_systems.py``: battles
(``model_a, model_b, winner``) with ties as half a win, deduplicated into weighted matchups, fitted by
L-BFGS on the logistic loss; the bootstrap reweights the same matchups with multinomial draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.metrics import roc_auc_score


def win_rate(wins: int, losses: int) -> float | None:
    """Share of decided votes won; None when nothing was decided."""
    decided = wins + losses
    return wins / decided if decided else None


def bootstrap_ci(
    wins: int, losses: int, *, rounds: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the win rate.

    Resampling n decided 0/1 outcomes with replacement is a Binomial(n, p̂) draw, so this needs only
    the counts (which SQL aggregates give) and is exact to the row bootstrap.
    """
    n = wins + losses
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    draws = rng.binomial(n, wins / n, size=rounds) / n
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    *,
    rounds: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    weights: Sequence[float] | np.ndarray | None = None,
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of a (weighted) mean, resampling rows."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.full(rounds, np.nan)
    for i in range(rounds):  # one resample at a time: memory stays O(rows)
        idx = rng.integers(0, x.size, x.size)
        total = w[idx].sum()
        if total > 0:
            means[i] = (w[idx] * x[idx]).sum() / total
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(means, [tail, 100 - tail])
    return float(low), float(high)


def auroc(scores: Iterable[float], labels: Iterable[bool]) -> float | None:
    """Area under the ROC curve of a score against a yes/no outcome; None with one class only."""
    y = np.asarray(list(labels), dtype=bool)
    s = np.asarray(list(scores), dtype=np.float64)
    if y.size == 0 or y.all() or not y.any():
        return None
    return float(roc_auc_score(y, s))


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(np.percentile(x, q)) if x.size else None


# --- Bradley-Terry, as in FastChat rating_systems.py -------------------------------------------------


def preprocess_for_bt(battles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Unique (model_a, model_b, outcome) matchups with their counts; outcome 1 = a wins, 0.5 = tie.

    An optional ``n`` column says how many identical battles a row stands for (pre-counted battles,
    so a million votes need not become a million rows); without it every row is one battle.
    """
    n = len(battles)
    codes, models = pd.factorize(pd.concat([battles["model_a"], battles["model_b"]]), sort=True)
    matchups = np.column_stack([codes[:n], codes[n:]])
    outcomes = np.full(n, 0.5)
    outcomes[(battles["winner"] == "model_a").to_numpy()] = 1.0
    outcomes[(battles["winner"] == "model_b").to_numpy()] = 0.0
    if "n" in battles:
        unique, inverse = np.unique(np.column_stack([matchups, outcomes]), return_inverse=True, axis=0)
        weights = np.bincount(inverse.reshape(-1), weights=battles["n"].to_numpy(np.float64), minlength=len(unique))
    else:
        unique, weights = np.unique(np.column_stack([matchups, outcomes]), return_counts=True, axis=0)
    return unique[:, :2].astype(np.int64), unique[:, 2], list(models), weights.astype(np.float64)


def _bt_loss_and_grad(
    ratings: np.ndarray, matchups: np.ndarray, outcomes: np.ndarray, weights: np.ndarray, alpha: float
) -> tuple[float, np.ndarray]:
    pair = ratings[matchups]
    probs = expit(alpha * (pair[:, 0] - pair[:, 1]))
    eps = 1e-12
    loss = -((np.log(probs + eps) * outcomes + np.log(1 - probs + eps) * (1 - outcomes)) * weights).sum()
    grads = -alpha * (outcomes - probs) * weights
    model_grad = np.zeros_like(ratings)
    np.add.at(model_grad, matchups[:, 0], grads)
    np.add.at(model_grad, matchups[:, 1], -grads)
    return float(loss), model_grad


def fit_bt(
    matchups: np.ndarray, outcomes: np.ndarray, weights: np.ndarray, n_models: int, alpha: float, tol: float = 1e-6
) -> np.ndarray:
    result = minimize(
        _bt_loss_and_grad,
        np.zeros(n_models),
        args=(matchups, outcomes, weights, alpha),
        jac=True,
        method="L-BFGS-B",
        options={"disp": False, "maxiter": 100, "gtol": tol},
    )
    return result.x


def _scale(ratings: np.ndarray, scale: float, init_rating: float) -> np.ndarray:
    """Ratings are only defined up to a shift: centre them, then map to the Elo-like scale."""
    return (ratings - ratings.mean()) * scale + init_rating


def compute_bt(
    battles: pd.DataFrame, base: float = 10.0, scale: float = 400.0, init_rating: float = 1000.0, tol: float = 1e-6
) -> pd.Series:
    """Bradley-Terry ratings (Elo scale, mean ``init_rating``) from a battles frame, best first."""
    matchups, outcomes, models, weights = preprocess_for_bt(battles)
    ratings = fit_bt(matchups, outcomes, weights, len(models), math.log(base), tol)
    return pd.Series(_scale(ratings, scale, init_rating), index=models).sort_values(ascending=False)


def compute_bootstrap_bt(
    battles: pd.DataFrame,
    *,
    rounds: int,
    seed: int,
    base: float = 10.0,
    scale: float = 400.0,
    init_rating: float = 1000.0,
    tol: float = 1e-6,
) -> pd.DataFrame:
    """One row of ratings per bootstrap round (battles resampled as multinomial matchup weights)."""
    matchups, outcomes, models, weights = preprocess_for_bt(battles)
    rng = np.random.default_rng(seed)
    n = int(round(weights.sum()))  # battles, counted with their ``n`` when given
    draws = rng.multinomial(n, weights / weights.sum(), size=rounds).astype(np.float64)
    rows = [_scale(fit_bt(matchups, outcomes, w, len(models), math.log(base), tol), scale, init_rating) for w in draws]
    return pd.DataFrame(rows, columns=models)


def leaderboard(battles: pd.DataFrame, *, rounds: int, seed: int, level: float = 0.95) -> pd.DataFrame:
    """Arms ranked by Bradley-Terry rating with bootstrap CIs and battle counts."""
    ratings = compute_bt(battles)
    boot = compute_bootstrap_bt(battles, rounds=rounds, seed=seed)
    tail = (1 - level) / 2
    if "n" in battles:
        counts = (
            pd.concat([battles.set_index("model_a")["n"], battles.set_index("model_b")["n"]]).groupby(level=0).sum()
        )
    else:
        counts = pd.concat([battles["model_a"], battles["model_b"]]).value_counts()
    return pd.DataFrame(
        {
            "arm": ratings.index,
            "rating": ratings.to_numpy(),
            "lower": boot.quantile(tail)[ratings.index].to_numpy(),
            "upper": boot.quantile(1 - tail)[ratings.index].to_numpy(),
            "battles": counts[ratings.index].to_numpy(),
        }
    ).reset_index(drop=True)


def pairwise_agreement(verdict_counts_per_item: Iterable[Sequence[int]]) -> tuple[int, float | None]:
    """Inter-rater signal: over all pairs of verdicts on the same item, the share that agree.

    Each item gives the count of each verdict it received (e.g. on / off / tie counts for one prompt).
    """
    pairs = agree = 0
    for counts in verdict_counts_per_item:
        c = np.asarray(counts, dtype=np.int64)
        n = int(c.sum())
        pairs += n * (n - 1) // 2
        agree += int((c * (c - 1) // 2).sum())
    return pairs, (agree / pairs if pairs else None)
