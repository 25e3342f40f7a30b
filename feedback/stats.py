"""Statistics as pure functions on counts, arrays or a battles frame; seed and rounds are arguments.

The Bradley-Terry fit follows FastChat's ``serve/monitor/rating_systems.py``: battles
(``model_a, model_b, winner``) with ties as half a win, deduplicated into weighted matchups, fitted by
L-BFGS on the logistic loss; the bootstrap reweights the same matchups with multinomial draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from feedback.cpus import usable_cpus


def win_rate(wins: int, losses: int) -> float | None:
    """Share of decided votes won; None when nothing was decided."""
    decided = wins + losses
    return wins / decided if decided else None


def wilson_ci(wins: int, losses: int, *, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of the win rate over decided votes; None when nothing was decided.

    Closed form, so cheap enough for a live page refresh (the bootstrap is for the report).
    """
    if not wins + losses:
        return None
    interval = binomtest(wins, wins + losses).proportion_ci(level, method="wilson")
    return float(interval.low), float(interval.high)


def win_rate_verdict(
    rate: float | None, interval: tuple[float, float] | None, votes: int
) -> tuple[str, dict[str, Any]]:
    """Which verdict a handoff win rate and its 95% CI support, with the figures a sentence needs.

    ``helps`` only when the whole interval is above an even split, ``hurts`` when it is all below,
    ``unclear`` otherwise, ``none`` without decisive votes. Pages word it in the reader's language.
    """
    if rate is None or interval is None:
        return "none", {}
    low, high = interval
    params = {"rate": f"{rate:.0%}", "votes": f"{votes:,}", "low": f"{low:.0%}", "high": f"{high:.0%}"}
    return ("helps" if low > 0.5 else "hurts" if high < 0.5 else "unclear"), params


VERDICTS_EN = {
    "none": "No decisive votes yet: no verdict on handoff.",
    "helps": "Handoff helps: people preferred it in {rate} of {votes} decisive votes (95% CI {low} to {high}), "
    "clearly above an even split.",
    "hurts": "Handoff hurts: people preferred it in only {rate} of {votes} decisive votes (95% CI {low} to {high}), "
    "clearly below an even split.",
    "unclear": "No clear difference yet: handoff won {rate} of {votes} decisive votes (95% CI {low} to {high}); "
    "the interval includes an even split.",
}


def win_rate_in_words(rate: float | None, interval: tuple[float, float] | None, votes: int) -> str:
    """A handoff win rate and its 95% CI as one English sentence (the report): helps, hurts or can't tell yet."""
    verdict, params = win_rate_verdict(rate, interval, votes)
    return VERDICTS_EN[verdict].format(**params)


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


def pairwise_agreement_cells(item: np.ndarray, n: np.ndarray) -> tuple[int, int, float | None]:
    """Inter-rater signal: over all pairs of verdicts on the same item, the share that agree, from counts
    per (item, verdict) cell: ``n`` votes gave one verdict on item ``item`` (one entry per distinct pair).
    Returns the number of items rated more than once, the pairs of their votes and the share that agree."""
    n = np.asarray(n, dtype=np.int64)
    _, inverse = np.unique(np.asarray(item), return_inverse=True)
    totals = np.bincount(inverse.reshape(-1), weights=n, minlength=int(inverse.max(initial=-1)) + 1).astype(np.int64)
    pairs = int((totals * (totals - 1) // 2).sum())  # items rated once add no pair, nor agreeing pair
    agree = int((n * (n - 1) // 2).sum())
    return int((totals > 1).sum()), pairs, (agree / pairs if pairs else None)


def bootstrap_threads() -> int:
    """Threads for bootstrap rounds that each fit every vote: two where this process may run on two cores.

    numpy and single-threaded BLAS let go of the GIL in a round's products, so two rounds run at once; each
    round's numbers are those of the same round alone. Not more than two: a round's temporaries are per thread."""
    return min(2, usable_cpus())


def single_threaded() -> threadpool_limits:
    """Many small L-BFGS fits: BLAS threads only wait on each other (20x slower on a busy machine)."""
    return threadpool_limits(1)


# --- Cluster bootstrap: resample participants, not votes ---------------------------------------------


@dataclass(frozen=True)
class ParticipantDraws:
    """How often each participant is drawn in each bootstrap round: ``rounds`` rows of ``groups`` counts.

    Votes of one participant are not independent (people differ in taste and habits), so every
    interval resamples whole participants; the same draws serve every estimate of one report. The rows
    are generated a block at a time as they are read, the same rows each time: the whole matrix of a
    million-vote event (200 rounds x hundreds of thousands of people) would take gigabytes as floats.

    A round draws ``groups`` participants with replacement, each equally likely, and counts them: a
    Multinomial(groups, 1/groups each) draw, made as ``bincount`` of ``groups`` uniform integers. numpy's
    ``multinomial`` makes the same distribution from one conditional binomial per participant, ~10x
    slower (seconds per pass over 300,000 people), and each segment of a report resamples its own people.
    """

    groups: int
    rounds: int
    seed: int
    block: int = 4  # rounds per block: 4 x 300,000 people as floats = 10 MB

    def __len__(self) -> int:
        return self.rounds

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self.blocks():
            yield from block

    def blocks(self) -> Iterator[np.ndarray]:
        """The rows in blocks of up to ``block`` rounds (the same rows, whatever the block size)."""
        if self.groups == 0:
            yield np.zeros((self.rounds, 0))
            return
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.rounds, self.block):
            rows = min(self.block, self.rounds - start)
            block = np.empty((rows, self.groups), dtype=np.float64)
            for row in range(rows):
                block[row] = np.bincount(rng.integers(0, self.groups, self.groups), minlength=self.groups)
            yield block


def participant_draws(groups: int, *, rounds: int, seed: int) -> ParticipantDraws:
    """The participant bootstrap's draws (``ParticipantDraws``), read one round at a time."""
    return ParticipantDraws(groups, rounds, seed)


def percentile_ci(draws: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of bootstrap draws (nan draws, from empty resamples, are left out)."""
    x = np.asarray(draws, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(x, [tail, 100 - tail])
    return float(low), float(high)


def cluster_ratio_ci(
    numerator: np.ndarray, denominator: np.ndarray, draws: ParticipantDraws, level: float = 0.95
) -> tuple[float, float] | None:
    """CI of Σ numerator / Σ denominator when whole participants are resampled.

    ``numerator``/``denominator`` hold one sum per participant (e.g. wins and decided votes), in the
    column order of ``draws`` (see ``participant_draws``); a win rate is the ratio of wins to decided.
    """
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    sums = [(block @ numerator, block @ denominator) for block in draws.blocks()]  # the draws made once
    num = np.concatenate([n for n, _ in sums])
    den = np.concatenate([d for _, d in sums])
    with np.errstate(invalid="ignore", divide="ignore"):
        return percentile_ci(np.where(den > 0, num / np.where(den > 0, den, 1), np.nan), level)


def cluster_win_rate(
    participant: np.ndarray, won: np.ndarray, *, rounds: int, seed: int, level: float = 0.95
) -> dict[str, float | int | list[float] | None]:
    """Win rate over decided votes with a participant (cluster) bootstrap CI and how many people it rests on.

    ``participant`` names the voter of each decided vote, ``won`` says whether the handoff arm won it.
    """
    codes, people = pd.factorize(pd.Series(participant))
    wins = np.bincount(codes, weights=np.asarray(won, dtype=np.float64), minlength=len(people))
    decided = np.bincount(codes, minlength=len(people)).astype(np.float64)
    ci = cluster_ratio_ci(wins, decided, participant_draws(len(people), rounds=rounds, seed=seed), level)
    return {
        "rate": float(wins.sum() / decided.sum()) if decided.sum() else None,
        "ci95": list(ci) if ci else None,
        "decided": int(decided.sum()),
        "participants": len(people),
    }


def cluster_bootstrap_bt(
    battles: pd.DataFrame, *, rounds: int, seed: int, scale: float = 400.0, init_rating: float = 1000.0
) -> tuple[pd.Series, pd.DataFrame, int]:
    """Bradley-Terry ratings with bootstrap rounds that resample participants (column ``participant``).

    Battles may be pre-counted (column ``n``). Returns the ratings, one row of ratings per round and
    the number of participants the leaderboard rests on.
    """
    codes, people = pd.factorize(battles["participant"])
    matchups, outcomes, models, _ = preprocess_for_bt(battles)
    n = battles["n"].to_numpy(np.float64) if "n" in battles else np.ones(len(battles))
    # the unique (matchup, outcome) row of every battle row, to sum per-round weights onto
    key = np.column_stack([*preprocess_rows(battles, models)])
    _, inverse = np.unique(key, axis=0, return_inverse=True)
    ratings, boot = cluster_bootstrap_bt_counts(
        codes,
        len(people),
        inverse.reshape(-1),
        n,
        matchups,
        outcomes,
        models,
        rounds=rounds,
        seed=seed,
        scale=scale,
        init_rating=init_rating,
    )
    return ratings, boot, len(people)


def cluster_bootstrap_bt_counts(
    participant: np.ndarray,
    people: int,
    row: np.ndarray,
    n: np.ndarray,
    matchups: np.ndarray,
    outcomes: np.ndarray,
    models: list[str],
    *,
    rounds: int,
    seed: int,
    scale: float = 400.0,
    init_rating: float = 1000.0,
) -> tuple[pd.Series, pd.DataFrame]:
    """``cluster_bootstrap_bt`` on counts: ``n`` battles of participant ``participant`` (a code below
    ``people``, in the draws' column order) on the (matchup, outcome) row ``row`` of ``matchups`` /
    ``outcomes`` (``preprocess_for_bt``'s rows). The counts go into one sparse participant x row matrix,
    so a round's weights are one product with its draws (whole numbers: the sums are exact, as the
    per-battle sums were) and each fit runs on the few distinct rows."""
    from scipy import sparse

    alpha = math.log(10.0)
    n = np.asarray(n, dtype=np.float64)
    # participant x row counts (rows repeat within a participant: a sparse product sums them)
    order = np.argsort(participant, kind="stable")
    indptr = np.searchsorted(participant[order], np.arange(people + 1))
    per = sparse.csr_matrix((n[order], np.asarray(row)[order], indptr), shape=(people, len(outcomes)))
    del order
    base = np.asarray(per.sum(axis=0)).reshape(-1)
    ratings = pd.Series(_scale(fit_bt(matchups, outcomes, base, len(models), alpha), scale, init_rating), index=models)
    draws = participant_draws(people, rounds=rounds, seed=seed)
    rows = []
    with single_threaded():
        for block in draws.blocks():
            for w in np.asarray((per.T @ block.T).T):
                rows.append(_scale(fit_bt(matchups, outcomes, w, len(models), alpha), scale, init_rating))
    return ratings.sort_values(ascending=False), pd.DataFrame(rows, columns=models)


def preprocess_rows(battles: pd.DataFrame, models: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(model_a code, model_b code, outcome) per battle row, in the model order of ``preprocess_for_bt``."""
    index = {m: i for i, m in enumerate(models)}
    a = battles["model_a"].map(index).to_numpy(np.float64)
    b = battles["model_b"].map(index).to_numpy(np.float64)
    outcome = np.full(len(battles), 0.5)
    outcome[(battles["winner"] == "model_a").to_numpy()] = 1.0
    outcome[(battles["winner"] == "model_b").to_numpy()] = 0.0
    return a, b, outcome


# --- Style control (FastChat rating_systems.py: preprocess_for_style, fit_contextual_bt) -------------

STYLE_FEATURES = ("tokens", "headers", "lists", "bold", "code_blocks")


def style_differences(style_a: np.ndarray, style_b: np.ndarray) -> np.ndarray:
    """Normalised style differences (a − b) / (a + b + 1) per feature, scaled to unit standard deviation.

    As in FastChat's ``preprocess_for_style`` (ratio with add-one, then standardised), except that the
    mean is not subtracted: our pane order is random, so the mean difference is ~0 anyway, and not
    centring keeps "0" meaning "both answers have the same style".
    """
    a, b = np.asarray(style_a, dtype=np.float64), np.asarray(style_b, dtype=np.float64)
    diff = (a - b) / (a + b + 1.0)
    std = diff.std(axis=0)
    return diff / np.where(std > 0, std, 1.0)


def _contextual_loss(
    params: np.ndarray,
    n_models: int,
    matchups: np.ndarray,
    features: np.ndarray,
    outcomes: np.ndarray,
    weights: np.ndarray,
    alpha: float,
    reg: float,
) -> tuple[float, np.ndarray]:
    ratings, coefs = params[:n_models], params[n_models:]
    # elementwise, not BLAS: a threaded gemv on a busy machine costs 20x the work itself here
    logits = alpha * (ratings[matchups[:, 0]] - ratings[matchups[:, 1]]) + (features * coefs).sum(axis=1)
    probs = expit(logits)
    eps = 1e-12
    loss = -((np.log(probs + eps) * outcomes + np.log(1 - probs + eps) * (1 - outcomes)) * weights).sum()
    loss += reg / 2 * float(params @ params)
    error = (outcomes - probs) * weights
    grad = reg * params
    grad[:n_models] += alpha * (
        np.bincount(matchups[:, 1], weights=error, minlength=n_models)
        - np.bincount(matchups[:, 0], weights=error, minlength=n_models)
    )
    grad[n_models:] -= (features * error[:, None]).sum(axis=0)
    return float(loss), grad


def fit_contextual_bt(
    matchups: np.ndarray,
    features: np.ndarray,
    outcomes: np.ndarray,
    n_models: int,
    *,
    weights: np.ndarray | None = None,
    alpha: float = math.log(10.0),
    reg: float = 0.5,
    tol: float = 1e-6,
) -> np.ndarray:
    """Bradley-Terry ratings plus one coefficient per style feature (FastChat's contextual BT, L2 ``reg``)."""
    w = np.ones(len(outcomes)) if weights is None else np.asarray(weights, dtype=np.float64)
    result = minimize(
        _contextual_loss,
        np.zeros(n_models + features.shape[1]),
        args=(n_models, matchups, features, outcomes, w, alpha, reg),
        jac=True,
        method="L-BFGS-B",
        options={"disp": False, "maxiter": 200, "gtol": tol},
    )
    return result.x


def _contextual_design(matchups: np.ndarray, features: np.ndarray, n_models: int, alpha: float) -> np.ndarray:
    """The contextual Bradley-Terry fit as a logistic regression: logit = design @ params."""
    rows = np.arange(len(matchups))
    design = np.zeros((len(matchups), n_models + features.shape[1]))
    design[rows, matchups[:, 0]] += alpha
    design[rows, matchups[:, 1]] -= alpha
    design[:, n_models:] = features
    return design


def fit_contextual_bt_newton(
    design: np.ndarray,
    outcomes: np.ndarray,
    weights: np.ndarray,
    start: np.ndarray,
    *,
    reg: float = 0.5,
    tol: float = 1e-10,
    maxiter: int = 50,
    chunk: int = 1 << 16,
) -> np.ndarray | None:
    """The same penalised likelihood as ``fit_contextual_bt`` (without its 1e-12 guard inside the logs),
    minimised by Newton's method with the exact gradient and Hessian from ``start``.

    For bootstrap rounds started at the point estimate it converges in about three steps (quadratically:
    it stops when no parameter moves more than ``tol``), where L-BFGS from zero needs tens of loss
    evaluations. None when it does not converge (the caller then falls back to L-BFGS)."""
    params = np.asarray(start, dtype=np.float64).copy()
    k = len(params)
    for _ in range(maxiter):
        grad = reg * params
        hess = reg * np.eye(k)
        for at in range(0, len(outcomes), chunk):  # bounded temporaries, whatever the number of votes
            z, w = design[at : at + chunk], weights[at : at + chunk]
            probs = expit(z @ params)
            grad -= z.T @ (w * (outcomes[at : at + chunk] - probs))
            hess += z.T @ (z * (w * probs * (1 - probs))[:, None])
        step = np.linalg.solve(hess, grad)
        if not np.all(np.isfinite(step)):
            return None
        largest = float(np.abs(step).max(initial=0.0))
        params -= step if largest <= 1.0 else step / largest  # at most one logit unit a step, far from the optimum
        if largest <= tol:
            return params
    return None


def effect_design(on_is_a: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
    """``handoff_effect``'s design matrix for these votes and covariates (the two arms, then ``features``;
    None: no covariates).

    A caller that builds it and lets ``features`` go holds the votes' covariates once, not twice, while the
    bootstrap fits run (a million votes: ~16 MB of style differences)."""
    on_is_a = np.asarray(on_is_a, dtype=bool)
    matchups = np.where(on_is_a[:, None], [[0, 1]], [[1, 0]])
    x = np.zeros((len(on_is_a), 0)) if features is None else np.asarray(features, dtype=np.float64)
    return _contextual_design(matchups, x, 2, math.log(10.0))


def handoff_effect(
    design: np.ndarray,
    a_won: np.ndarray,
    participant: np.ndarray,
    *,
    rounds: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, object]:
    """P(handoff arm wins a decided vote) from a two-arm Bradley-Terry fit, optionally at equal style.

    ``design``: ``effect_design(on_is_a, features)``. Each decided vote is a battle of pane a against
    pane b; ``features`` (pane a − pane b, e.g. from ``style_differences``) enter the fit as covariates,
    so the arm effect is the effect at equal features. Intervals resample participants. Returns the win
    probability, its CI, and the covariates' coefficients (logit per standard deviation) with CIs.

    The point estimate is ``fit_contextual_bt`` (L-BFGS); each bootstrap round minimises the same
    reweighted likelihood by Newton's method from the point estimate (``fit_contextual_bt_newton``),
    over the distinct (matchup, features, outcome) rows with summed weights when there are few."""
    on_is_a = design[:, 0] > 0  # the handoff arm's column: +alpha where it is pane a
    matchups = np.where(on_is_a[:, None], [[0, 1]], [[1, 0]])  # 0 = handoff on, 1 = off
    outcomes = np.asarray(a_won, dtype=np.float64)
    x = design[:, 2:]  # the covariates as the design holds them (a view: the same numbers, no copy)
    codes, people = pd.factorize(pd.Series(participant))
    alpha = math.log(10.0)

    def summary(params: np.ndarray) -> np.ndarray:
        return np.concatenate([[expit(alpha * (params[0] - params[1]))], params[2:]])

    draws = participant_draws(len(people), rounds=rounds, seed=seed)
    with single_threaded():
        start = fit_contextual_bt(matchups, x, outcomes, 2, weights=None, alpha=alpha)
        point = summary(start)
        boot = np.zeros((0, len(point)))
        if len(outcomes):
            # without covariates at most four distinct rows; with them nearly every row is distinct (no copy)
            rows, fold = _distinct_rows(np.column_stack([design, outcomes])) if x.shape[1] == 0 else (design, None)
            if fold is not None:  # few distinct rows (no covariates: four): fit those, weights summed
                design, fit_outcomes = np.ascontiguousarray(rows[:, :-1]), rows[:, -1].copy()
            else:
                fit_outcomes = outcomes

            def fit(w: np.ndarray) -> np.ndarray:
                weights = w[codes] if fold is None else np.bincount(fold, weights=w[codes], minlength=len(rows))
                params = fit_contextual_bt_newton(design, fit_outcomes, weights, start)
                if params is None:  # not converged: the generic optimiser, as for the point estimate
                    params = fit_contextual_bt(matchups, x, outcomes, 2, weights=w[codes], alpha=alpha)
                return summary(params)

            if fold is not None:  # a few rows: a fit takes microseconds
                boot = np.array([fit(w) for w in draws])
            else:  # a fit per round over every vote: the rounds of a block of draws in threads (``bootstrap_threads``)
                with ThreadPoolExecutor(bootstrap_threads(), thread_name_prefix="bootstrap") as pool:
                    boot = np.array([params for block in draws.blocks() for params in pool.map(fit, block)])
    cis = [percentile_ci(boot[:, i], level) for i in range(len(point))]
    return {
        "win_probability": float(point[0]),
        "ci95": list(cis[0]) if cis[0] else None,
        "coefficients": [float(c) for c in point[1:]],
        "coefficient_ci95": [list(c) if c else None for c in cis[1:]],
        "decided": len(outcomes),
        "participants": len(people),
    }


def _distinct_rows(rows: np.ndarray, most: float = 0.25) -> tuple[np.ndarray, np.ndarray | None]:
    """The distinct rows and each row's index among them, when they are at most ``most`` of the rows
    (otherwise the rows themselves and None): continuous covariates make nearly every row distinct."""
    if rows.shape[1] > 3:  # the arms and the outcome alone: at most four distinct rows; with covariates, skip
        return rows, None
    distinct, fold = np.unique(rows, axis=0, return_inverse=True)
    if len(distinct) > most * len(rows):
        return rows, None
    return distinct, fold.reshape(-1)


def style_explained(raw: float, controlled: float) -> float | None:
    """Share of the handoff advantage (win probability above 0.5) that style accounts for."""
    if raw is None or controlled is None or abs(raw - 0.5) < 1e-9:
        return None
    return 1 - (controlled - 0.5) / (raw - 0.5)


# --- Agreement ----------------------------------------------------------------------------------------


def cohen_kappa(x: np.ndarray, y: np.ndarray, labels: Sequence[str] | None = None) -> float | None:
    """Cohen's κ of two raters on the same items: agreement beyond what their label shares predict."""
    x, y = np.asarray(x, dtype=object), np.asarray(y, dtype=object)
    if x.size == 0:
        return None
    cats = list(labels) if labels is not None else sorted(set(x) | set(y))
    observed = float((x == y).mean())
    expected = sum(float((x == c).mean()) * float((y == c).mean()) for c in cats)
    return (observed - expected) / (1 - expected) if expected < 1 else None


def agreement(
    human: np.ndarray, judge: np.ndarray, participant: np.ndarray, *, rounds: int, seed: int, level: float = 0.95
) -> dict[str, object]:
    """Agreement rate and Cohen's κ of judge and human verdicts, with participant-bootstrap CIs."""
    human, judge = np.asarray(human, dtype=object), np.asarray(judge, dtype=object)
    codes, people = pd.factorize(pd.Series(participant))
    labels = sorted(set(human) | set(judge))
    same = (human == judge).astype(np.float64)
    draws = participant_draws(len(people), rounds=rounds, seed=seed)
    rate_ci = cluster_ratio_ci(
        np.bincount(codes, weights=same, minlength=len(people)),
        np.bincount(codes, minlength=len(people)).astype(np.float64),
        draws,
        level,
    )
    kappas = []
    for w in draws:
        rw = w[codes]
        total = rw.sum()
        if total == 0:
            continue
        observed = float((rw * same).sum() / total)
        expected = sum(float(rw[human == c].sum() / total) * float(rw[judge == c].sum() / total) for c in labels)
        kappas.append((observed - expected) / (1 - expected) if expected < 1 else np.nan)
    kappa_ci = percentile_ci(np.asarray(kappas), level)
    return {
        "n": int(human.size),
        "participants": len(people),
        "agreement": float(same.mean()) if same.size else None,
        "agreement_ci95": list(rate_ci) if rate_ci else None,
        "kappa": cohen_kappa(human, judge, labels),
        "kappa_ci95": list(kappa_ci) if kappa_ci else None,
    }


# --- RouteLLM: threshold calibration and cost-quality metrics ----------------------------------------


def calibrate_threshold(scores: np.ndarray, target_rate: float) -> float:
    """Threshold ``t`` so that a share ``target_rate`` of scores is ``>= t`` (RouteLLM's
    ``calibrate_threshold.py``: the (1 − strong-model share) quantile of the router's scores)."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[~np.isnan(scores)])
    if s.size == 0:
        raise ValueError("No scores to calibrate on.")
    if target_rate <= 0:
        return float(np.nextafter(s[-1], np.inf))
    k = min(s.size, max(1, int(round(target_rate * s.size))))
    return float(s[s.size - k])  # exactly k scores are >= it (ties aside)


def performance_gap_recovered(rates: np.ndarray, gains: np.ndarray) -> dict[str, float | None]:
    """RouteLLM's cost-quality metrics on a replay curve (Ong et al. 2024, ``routellm/evals/evaluate.py``).

    ``rates`` = share handed off, ``gains`` = quality gained over never handing off. PGR(rate) is the
    gain divided by the gain of always handing off; CPT(x) is the smallest handoff share whose PGR
    reaches x (interpolated), APGR the area under PGR over handoff shares 0…1.
    """
    order = np.argsort(rates)
    r = np.concatenate([[0.0], np.asarray(rates, dtype=np.float64)[order]])
    g = np.concatenate([[0.0], np.asarray(gains, dtype=np.float64)[order]])
    full = g[np.argmax(r)]
    if r.max() < 1 - 1e-9 or full <= 0:
        return {"full_gain": float(full), "cpt50": None, "cpt80": None, "apgr": None}
    pgr = g / full

    def cpt(x: float) -> float | None:
        above = np.flatnonzero(pgr >= x)
        if above.size == 0:
            return None
        i = above[0]
        if i == 0:
            return float(r[0])
        return float(np.interp(x, [pgr[i - 1], pgr[i]], [r[i - 1], r[i]]))

    return {
        "full_gain": float(full),
        "cpt50": cpt(0.5),
        "cpt80": cpt(0.8),
        "apgr": float(np.trapezoid(pgr, r)),
    }


# --- Shown precision -----------------------------------------------------------------------------------


def decimals_for(half_width: float) -> int:
    """Decimal places an estimate supports: one significant digit of its CI half-width."""
    if not half_width or not math.isfinite(half_width) or half_width <= 0:
        return 4
    return int(-math.floor(math.log10(half_width)))


def _shown_decimals(v: float, ci: Sequence[float] | None, significant: int) -> int:
    if ci is not None and ci[0] is not None and ci[1] is not None:
        return decimals_for((ci[1] - ci[0]) / 2)
    return significant - 1 - int(math.floor(math.log10(abs(v))))


def shown(value: float | None, ci: Sequence[float] | None = None, *, significant: int = 3) -> float | int | None:
    """A number rounded to what its CI supports; without a CI, to ``significant`` digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    v = float(value)
    if v == 0 and ci is None:
        return 0.0
    d = _shown_decimals(v, ci, significant)
    out = round(v, d) + 0.0  # no '-0.0'
    return int(out) if d <= 0 else out


def shown_text(value: float | None, ci: Sequence[float] | None = None, *, significant: int = 3) -> str:
    """``shown`` as text, keeping the trailing zeros the precision implies (``0.70``, not ``0.7``)."""
    out = shown(value, ci, significant=significant)
    if out is None:
        return "n/a"
    if isinstance(out, int) or float(value) == 0 and ci is None:
        return str(out)
    return f"{out:.{max(0, _shown_decimals(float(value), ci, significant))}f}"


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """AUROC with row weights (ties count half), in one sort: P(score of a positive > of a negative)."""
    s, y, w = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool), np.asarray(weights)
    if s.size == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s, y, w = s[order], y[order], w[order]
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
    neg = np.bincount(group, weights=w * ~y)
    pos = np.bincount(group, weights=w * y)
    return _auroc_from_groups(pos, neg)


def _auroc_from_groups(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC from the positive and negative weight of each tie group, groups in ascending score order."""
    below = np.cumsum(neg) - neg  # negative weight strictly below each tie group
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos == 0 or total_neg == 0:
        return float("nan")
    return float((pos * (below + neg / 2)).sum() / (total_pos * total_neg))


def cluster_auroc(
    scores: np.ndarray, labels: np.ndarray, participant: np.ndarray, *, rounds: int, seed: int, level: float = 0.95
) -> dict[str, object]:
    """AUROC of a score for a yes/no outcome, with a participant-bootstrap CI.

    The scores are sorted once: a round only reweights them, so it sums each tie group's positive and
    negative weight (Mann-Whitney with weights) instead of sorting again. The weights are whole draw
    counts, so every sum is an exact integer and each round's AUROC is the one ``weighted_auroc`` gives,
    to the last bit."""
    codes, people = pd.factorize(pd.Series(participant))
    draws = participant_draws(len(people), rounds=rounds, seed=seed)
    point = weighted_auroc(scores, labels, np.ones(len(codes)))
    boot = np.array([])
    if len(codes):
        s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
        order = np.argsort(s, kind="mergesort")
        s, y, sorted_codes = s[order], y[order], codes[order]
        group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
        groups = int(group[-1]) + 1
        pos_group, pos_codes = group[y], sorted_codes[y]
        neg_group, neg_codes = group[~y], sorted_codes[~y]
        boot = np.array(
            [
                _auroc_from_groups(
                    np.bincount(pos_group, weights=w[pos_codes], minlength=groups),
                    np.bincount(neg_group, weights=w[neg_codes], minlength=groups),
                )
                for w in draws
            ]
        )
    ci = percentile_ci(boot, level)
    return {
        "auroc": None if math.isnan(point) else point,
        "ci95": list(ci) if ci else None,
        "n": len(codes),
        "participants": len(people),
    }
