"""Is handoff better, or only longer, faster-looking or voted by bots? The research analyses on votes.

Pure functions on the per-vote frame of ``db.research.vote_rows`` (and judge verdicts); every
interval resamples participants (``stats.participant_draws``). Definitions a reader needs:

- too-fast vote: saved sooner than 2 s + 10 ms per token of the shorter answer after both answers
  completed (no one reads 100 tokens a second);
- flagged participant: at least 3 votes of which half are too fast, or at least 6 pane votes with
  95 % on one side, or 5 votes within 60 s;
- origin-revealing vote: either shown answer names a model or AI company (``feedback.style``);
- duplicate: a prompt the same participant already sent (same text ignoring case, spacing and end
  punctuation, or an embedding cosine ≥ ``NEAR_DUPLICATE``), counted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from db.research import judge_rows, style_column, vote_rows
from db.session import get_engine
from feedback import stats
from feedback.embeddings import Embed
from feedback.export.dataset import ExportFilters, conversation_query
from feedback.memory import release_free_memory
from feedback.redaction import redact
from feedback.vote_flags import quality_flags

FILTERS = ("too_fast", "flagged_participant", "reveals_origin", "duplicate")


def _style_matrix(votes: pd.DataFrame, arm_style: str) -> np.ndarray:
    """The style features of one arm (``on_style`` / ``off_style``), one row per vote."""
    return np.ascontiguousarray(votes[[style_column(arm_style, k) for k in stats.STYLE_FEATURES]].to_numpy(dtype=float))


def _has_style(votes: pd.DataFrame, arm_style: str) -> pd.Series:
    return votes[style_column(arm_style, stats.STYLE_FEATURES[0])].notna()


def _headline(votes: pd.DataFrame, keep: np.ndarray, *, rounds: int, seed: int) -> dict[str, Any]:
    decided = keep & votes["winner_arm"].isin(["on", "off"]).to_numpy()
    result = stats.cluster_win_rate(
        votes["participant_id"].to_numpy()[decided],
        (votes["winner_arm"].to_numpy()[decided] == "on"),
        rounds=rounds,
        seed=seed,
    )
    return {"votes": int(keep.sum()), "removed": int((~keep).sum()), **result}


def vote_quality(votes: pd.DataFrame, flags: pd.DataFrame, *, rounds: int, seed: int) -> dict[str, Any]:
    """The headline without filters, without each flagged group, and without all of them."""
    everything = np.ones(len(votes), dtype=bool)
    rows = {"none": _headline(votes, everything, rounds=rounds, seed=seed)}
    for name in FILTERS:
        rows[name] = _headline(votes, ~flags[name].to_numpy(bool), rounds=rounds, seed=seed)
    rows["all"] = _headline(votes, ~flags[list(FILTERS)].to_numpy(bool).any(axis=1), rounds=rounds, seed=seed)
    participants = flags.groupby(votes["participant_id"])["flagged_participant"].first()
    return {
        "filters": rows,
        "flagged_participants": int(participants.sum()),
        "participants": int(participants.size),
        "too_fast_votes": int(flags["too_fast"].sum()),
    }


def _decided(votes: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Handed-off votes that preferred a pane; only ``columns`` of them (a million votes: copy what is read)."""
    keep = votes["handed_off"] & votes["winner_arm"].isin(["on", "off"]) & votes["winner"].isin(["a", "b"])
    return votes[keep] if columns is None else votes.loc[keep, list(columns)]


def _style_columns() -> list[str]:
    return [style_column(arm, k) for arm in ("on_style", "off_style") for k in stats.STYLE_FEATURES]


# what the latency section reads per vote (its copies of the handed-off votes hold only these)
LATENCY_COLUMNS = (
    "participant_id",
    "handed_off",
    "display",
    "handoff_side",
    "winner",
    "winner_arm",
    "on_latency_ms",
    "off_latency_ms",
    "on_ttft_ms",
    "off_ttft_ms",
)


def _by_pane(decided: pd.DataFrame, on: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    on_is_a = (decided["handoff_side"] == "a").to_numpy()[:, None]
    return np.where(on_is_a, on, off), np.where(on_is_a, off, on)


def style_control(votes: pd.DataFrame, *, rounds: int, seed: int) -> dict[str, Any] | None:
    """The handoff effect with and without style control (FastChat's style features as BT covariates)."""
    decided = _decided(votes, ["participant_id", "handoff_side", "winner", *_style_columns()])
    decided = decided[_has_style(decided, "on_style") & _has_style(decided, "off_style")]
    if len(decided) < 2:
        return None
    a, b = _by_pane(decided, _style_matrix(decided, "on_style"), _style_matrix(decided, "off_style"))
    on_is_a = (decided["handoff_side"] == "a").to_numpy()
    a_won = (decided["winner"] == "a").to_numpy()
    people = decided["participant_id"].to_numpy()
    raw = stats.handoff_effect(on_is_a, a_won, people, None, rounds=rounds, seed=seed)
    controlled = stats.handoff_effect(on_is_a, a_won, people, stats.style_differences(a, b), rounds=rounds, seed=seed)
    explained = stats.style_explained(raw["win_probability"], controlled["win_probability"])
    on_style = _style_matrix(decided, "on_style").mean(axis=0)
    off_style = _style_matrix(decided, "off_style").mean(axis=0)
    return {
        "raw": raw,
        "controlled": {
            **controlled,
            "coefficients": dict(zip(stats.STYLE_FEATURES, controlled["coefficients"], strict=True)),
            "coefficient_ci95": dict(zip(stats.STYLE_FEATURES, controlled["coefficient_ci95"], strict=True)),
        },
        "mean_style": {
            "on": dict(zip(stats.STYLE_FEATURES, on_style.tolist(), strict=True)),
            "off": dict(zip(stats.STYLE_FEATURES, off_style.tolist(), strict=True)),
        },
        "explained_share": explained,
        "explained_percent": None if explained is None else 100 * explained,
    }


def _normalised_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return stats.style_differences(a[:, None], b[:, None])


def latency(votes: pd.DataFrame, *, rounds: int, seed: int) -> dict[str, Any]:
    """How well pane timing predicts the handoff side, the effect with timing as a covariate, and by display."""
    shown = votes.loc[
        votes["handed_off"] & votes["on_latency_ms"].notna() & votes["off_latency_ms"].notna(), list(LATENCY_COLUMNS)
    ]
    live = shown[shown["display"].fillna("live") == "live"]
    on_a = (live["handoff_side"] == "a").to_numpy()
    people = live["participant_id"].to_numpy()
    signals = {}
    for name, column in (("duration", "latency_ms"), ("ttft", "ttft_ms")):
        on_t, off_t = live[f"on_{column}"].astype(float).to_numpy(), live[f"off_{column}"].astype(float).to_numpy()
        a_t, b_t = np.where(on_a, on_t, off_t), np.where(on_a, off_t, on_t)
        usable = ~(np.isnan(a_t) | np.isnan(b_t))
        signals[name] = stats.cluster_auroc((a_t - b_t)[usable], on_a[usable], people[usable], rounds=rounds, seed=seed)
        if name == "duration":
            signals["finish_order"] = stats.cluster_auroc(
                (a_t > b_t)[usable].astype(float), on_a[usable], people[usable], rounds=rounds, seed=seed
            )
    decided = _decided(live)
    covariate = None
    if len(decided) >= 2:
        d_on_a = (decided["handoff_side"] == "a").to_numpy()
        a_lat, b_lat = _by_pane(
            decided,
            decided["on_latency_ms"].astype(float).to_numpy()[:, None],
            decided["off_latency_ms"].astype(float).to_numpy()[:, None],
        )
        features = _normalised_difference(a_lat[:, 0], b_lat[:, 0])
        d_people = decided["participant_id"].to_numpy()
        a_won = (decided["winner"] == "a").to_numpy()
        raw = stats.handoff_effect(d_on_a, a_won, d_people, None, rounds=rounds, seed=seed)
        adjusted = stats.handoff_effect(d_on_a, a_won, d_people, features, rounds=rounds, seed=seed)
        covariate = {"raw": raw, "with_latency": adjusted}
    by_display = {}
    for display, group in votes[["winner_arm", "participant_id"]].groupby(votes["display"].fillna("live")):
        d = group[group["winner_arm"].isin(["on", "off"])]
        by_display[str(display)] = stats.cluster_win_rate(
            d["participant_id"].to_numpy(), (d["winner_arm"] == "on").to_numpy(), rounds=rounds, seed=seed
        )
    leak = signals["duration"]
    return {
        "signals": signals,
        "leak_detected": bool(leak["ci95"] and (leak["ci95"][0] > 0.5 or leak["ci95"][1] < 0.5)),
        "effect": covariate,
        "by_display": by_display,
    }


def judge_agreement(
    votes: pd.DataFrame, judges: pd.DataFrame, *, rounds: int, seed: int, disagreements: int = 10
) -> dict[str, Any]:
    """Per judge model: agreement and Cohen's κ with the human verdicts on decided pairs, per category,
    the pairs where they disagree most (both orders against the person), and what judging cost."""
    out: dict[str, Any] = {}
    if judges.empty:
        return out
    human = votes[votes["winner_arm"].isin(["on", "off"])].set_index("vote_id")
    for model, rows in judges.groupby("model"):
        per_vote = rows.groupby("vote_id")["judge_arm"].agg(lambda v: _combine(list(v)))
        consistent = rows.groupby("vote_id")["judge_arm"].agg(lambda v: len(set(v)) == 1 and len(v) == 2)
        common = human.index.intersection(per_vote.index)
        h = human.loc[common]
        judge = per_vote.loc[common].to_numpy(object)
        result = stats.agreement(
            h["winner_arm"].to_numpy(object), judge, h["participant_id"].to_numpy(), rounds=rounds, seed=seed
        )
        categories = {}
        for category, idx in h.groupby("category").groups.items():
            mask = h.index.isin(idx)
            categories[str(category)] = stats.agreement(
                h["winner_arm"].to_numpy(object)[mask],
                judge[mask],
                h["participant_id"].to_numpy()[mask],
                rounds=rounds,
                seed=seed,
            )
        against = h[(judge != h["winner_arm"].to_numpy(object)) & (judge != "tie")]
        against = against[consistent.loc[against.index].to_numpy(bool)]
        out[str(model)] = {
            **result,
            "position_consistent": float(consistent.mean()) if len(consistent) else None,
            "by_category": categories,
            "disagreements": [
                {
                    "vote_id": int(vote_id),
                    "category": str(r.category),
                    "human": str(r.winner_arm),
                    "judge": str(per_vote.loc[vote_id]),
                    "prompt": redact(str(r.prompt))[:200],
                }
                for vote_id, r in against.head(disagreements).iterrows()
            ],
            "verdicts": int(len(rows)),
            "tokens_in": int(rows["tokens_in"].fillna(0).sum()),
            "tokens_out": int(rows["tokens_out"].fillna(0).sum()),
            "tokens": int(rows["tokens_in"].fillna(0).sum() + rows["tokens_out"].fillna(0).sum()),
            "cost": float(rows["cost"].fillna(0).astype(float).sum()),
        }
    return out


def _combine(verdicts: Sequence[str | None]) -> str:
    """One verdict from both presentation orders: the arm both name, otherwise a tie (position-dependent)."""
    named = [v for v in verdicts if v is not None]
    if not named:
        return "tie"
    return named[0] if len(set(named)) == 1 else "tie"


def load_votes(url: str, filters: ExportFilters) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-vote frame and the judge verdicts of the visible conversations in ``filters``."""
    visible = conversation_query(filters).subquery()
    with get_engine(url).connect() as connection:
        # freed chunks given back as the columns are joined (~240 MiB at a million votes otherwise resident)
        votes = vote_rows(connection, visible, style_features=stats.STYLE_FEATURES, release=release_free_memory)
        return votes, judge_rows(connection, visible)


def research(
    votes: pd.DataFrame, judges: pd.DataFrame, *, rounds: int, seed: int, embed: Embed | None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Every research section of the report, plus the per-vote flags (exports carry them)."""
    flags = quality_flags(votes, embed)
    return {
        "style_control": style_control(votes, rounds=rounds, seed=seed),
        "latency": latency(votes, rounds=rounds, seed=seed),
        "vote_quality": vote_quality(votes, flags, rounds=rounds, seed=seed),
        "judges": judge_agreement(votes, judges, rounds=rounds, seed=seed),
    }, flags
