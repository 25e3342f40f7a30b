"""Is handoff better, or only longer, faster-looking or voted by bots? The research analyses on votes.

Pure functions on the per-vote frame of ``db.research.vote_rows`` (and judge verdicts); every
interval resamples participants (``stats.participant_draws``). The report reads ``ReportVotes`` instead
(``load_report_votes``: labels as codes for every vote, full columns only for the rows a section reads),
and ``report_research`` gives the same numbers from it. Definitions a reader needs:

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from db.research import (
    VOTE_COLUMNS,
    Labels,
    judge_rows,
    style_column,
    style_floats,
    vote_column_arrays,
    vote_rows,
)
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


def vote_quality(votes: pd.DataFrame, flags: pd.DataFrame, *, rounds: int, seed: int) -> dict[str, Any]:
    """The headline without filters, without each flagged group, and without all of them."""
    # read once for the five headlines (a million votes: one bool per vote, not an object array per headline)
    participant = votes["participant_id"].to_numpy()
    arm = votes["winner_arm"]
    decided, won = arm.isin(["on", "off"]).to_numpy(), (arm == "on").to_numpy()
    del arm

    def headline(keep: np.ndarray) -> dict[str, Any]:
        """The handoff arm's win rate over the ``keep`` votes that preferred an arm."""
        counted = keep & decided
        result = stats.cluster_win_rate(participant[counted], won[counted], rounds=rounds, seed=seed)
        return {"votes": int(keep.sum()), "removed": int((~keep).sum()), **result}

    rows = {"none": headline(np.ones(len(votes), dtype=bool))}
    for name in FILTERS:
        rows[name] = headline(~flags[name].to_numpy(bool))
    rows["all"] = headline(~flags[list(FILTERS)].to_numpy(bool).any(axis=1))
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
    if keep.all():  # the report's own rows (``ReportVotes.style``): no copy, not even of the columns read
        return votes
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
    del votes  # (rows handed over by ``report_research`` are let go with ``decided`` below)
    styled = _has_style(decided, "on_style") & _has_style(decided, "off_style")
    if not styled.all():  # (the report's own rows all have both styles: no copy)
        decided = decided[styled]
    if len(decided) < 2:
        return None
    # pane a's and b's matrices made in place of the arms' (a million votes: ~16 MB a matrix), then
    # ``stats.style_differences`` computed in place a feature at a time: the same operations on the same
    # numbers, with one column's temporaries (3 MB) instead of whole matrices beside the two
    a, b = _style_matrix(decided, "on_style"), _style_matrix(decided, "off_style")
    on_style, off_style = a.mean(axis=0), b.mean(axis=0)
    off_is_a = (decided["handoff_side"] != "a").to_numpy()
    for feature in range(a.shape[1]):
        pane_a, pane_b = a[:, feature], b[:, feature]
        swapped = pane_a[off_is_a]
        pane_a[off_is_a] = pane_b[off_is_a]
        pane_b[off_is_a] = swapped
        del swapped
        total = pane_a + pane_b
        total += 1.0
        np.subtract(pane_a, pane_b, out=pane_a)
        np.divide(pane_a, total, out=pane_a)
        del total, pane_a, pane_b
    del b
    std = a.std(axis=0)
    a /= np.where(std > 0, std, 1.0)
    differences = a
    del a
    on_is_a = (decided["handoff_side"] == "a").to_numpy()
    a_won = (decided["winner"] == "a").to_numpy()
    people = decided["participant_id"].to_numpy()
    del decided
    raw = stats.handoff_effect(stats.effect_design(on_is_a), a_won, people, rounds=rounds, seed=seed)
    design = stats.effect_design(on_is_a, differences)
    del differences  # held once, in the design's columns, through the controlled fits
    controlled = stats.handoff_effect(design, a_won, people, rounds=rounds, seed=seed)
    del design
    explained = stats.style_explained(raw["win_probability"], controlled["win_probability"])
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


def latency(votes: pd.DataFrame, *, rounds: int, seed: int, timing: pd.DataFrame | None = None) -> dict[str, Any]:
    """How well pane timing predicts the handoff side, the effect with timing as a covariate, and by display.

    ``timing``: the handed-off votes with both latencies (``LATENCY_COLUMNS``) where ``votes`` lacks the
    timing columns (``ReportVotes.timing``); by default taken from ``votes``."""
    source = votes if timing is None else timing
    keep = source["handed_off"] & source["on_latency_ms"].notna() & source["off_latency_ms"].notna()
    keep = keep.to_numpy() & (source["display"].fillna("live") == "live").to_numpy()
    # only the rows read are copied, and none where all are (``ReportVotes.timing`` of a live-only event)
    live = source if keep.all() else source.loc[keep, list(LATENCY_COLUMNS)]
    del keep
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
    del on_t, off_t, a_t, b_t, usable  # the last signal's arrays: not held through the effect's fits
    decided = _decided(live)
    del source, live, timing  # (rows handed over by ``report_research`` are let go with ``decided`` below)
    covariate = None
    if len(decided) >= 2:
        d_on_a = (decided["handoff_side"] == "a").to_numpy()
        a_lat, b_lat = _by_pane(
            decided,
            decided["on_latency_ms"].astype(float).to_numpy()[:, None],
            decided["off_latency_ms"].astype(float).to_numpy()[:, None],
        )
        features = _normalised_difference(a_lat[:, 0], b_lat[:, 0])
        del a_lat, b_lat
        d_people = decided["participant_id"].to_numpy()
        a_won = (decided["winner"] == "a").to_numpy()
        del decided
        raw = stats.handoff_effect(stats.effect_design(d_on_a), a_won, d_people, rounds=rounds, seed=seed)
        design = stats.effect_design(d_on_a, features)
        del features
        adjusted = stats.handoff_effect(design, a_won, d_people, rounds=rounds, seed=seed)
        del design
        covariate = {"raw": raw, "with_latency": adjusted}
    by_display = {}
    # the groups of ``groupby(display)`` (sorted, observed) on codes: a mask per display, no frame per group
    display = votes["display"].fillna("live")
    display = display if isinstance(display.dtype, pd.CategoricalDtype) else display.astype("category")
    codes = display.cat.codes.to_numpy()
    decided = votes["winner_arm"].isin(["on", "off"]).to_numpy()
    won, people = (votes["winner_arm"] == "on").to_numpy(), votes["participant_id"].to_numpy()
    for code, name in enumerate(display.cat.categories):
        group = codes == code
        if group.any():
            group &= decided
            by_display[str(name)] = stats.cluster_win_rate(people[group], won[group], rounds=rounds, seed=seed)
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


# --- The report's votes: compact columns read once, the research sections' rows kept apart ---------

# labels the report keeps for every vote, as small codes (``display`` without a value reads as "live")
REPORT_LABELS = (
    "event",
    "region",
    "language",
    "category",
    "winner",
    "winner_arm",
    "handoff_side",
    "policy",
    "threshold",
    "model_off",
    "display",
)
STYLE_ROW_LABELS = ("handoff_side", "winner", "winner_arm")
FLAG_CHUNK = 50_000  # votes (whole participants) per quality_flags call when the report computes the flags


@dataclass
class ReportVotes:
    """The report's per-vote data, a few bytes a vote instead of a frame of every column of every vote.

    ``votes``: one row per visible vote in vote order, ids and labels (categoricals), ``handed_off``;
    ``flags``: its quality flags (``quality_flags``' four columns), same rows; ``style``: the decided
    handed-off votes with both styles (what ``style_control`` reads); ``timing``: the handed-off votes with
    both latencies (``LATENCY_COLUMNS``); ``judged``: the judged votes with their prompt (``judge_agreement``);
    ``judges``: the verdicts (``db.research.judge_rows``); ``inter_rater``: prompts voted on more than once,
    their pairs of votes and the share that agree (``stats.pairwise_agreement_cells`` over the votes per
    prompt text and verdict, None included)."""

    votes: pd.DataFrame
    flags: pd.DataFrame
    style: pd.DataFrame
    timing: pd.DataFrame
    judged: pd.DataFrame
    judges: pd.DataFrame
    inter_rater: tuple[int, int, float | None]


def _small(codes: np.ndarray, labels: Labels) -> np.ndarray:
    """Label codes in the smallest integer type their count allows so far (concatenation widens them)."""
    size = len(labels.index)
    return codes.astype(np.int8 if size < 127 else np.int16 if size < 32_767 else np.int32)


def load_report_votes(url: str, filters: ExportFilters, embed: Embed | None = None, chunk: int = 10_000) -> ReportVotes:
    """The visible votes of ``filters`` read once, in chunks of arrays (``db.research.vote_column_arrays``:
    through ADBC on a SQLite file, no Python object per value), into ``ReportVotes``.

    Every chunk keeps compact codes for all votes and the full columns only for the rows a section reads
    (style for decided handed-off votes, timing for handed-off ones, the prompt for judged ones). The
    quality flags need each participant's votes together: they are computed after the read from a few
    narrow columns, ``FLAG_CHUNK`` votes of whole participants at a time (``quality_flags`` gives the same
    flags per participant as over all votes, as the exports' ``flag_lookup`` relies on)."""
    visible = conversation_query(filters).subquery()
    labels = {name: Labels() for name in (*REPORT_LABELS, "prompt")}
    parts: dict[str, list[np.ndarray]] = {}
    style_parts: dict[str, list[np.ndarray]] = {}
    timing_parts: dict[str, list[np.ndarray]] = {}
    judged_rows: list[tuple] = []

    def keep(into: dict[str, list[np.ndarray]], name: str, array: np.ndarray) -> None:
        into.setdefault(name, []).append(array)

    with get_engine(url).connect() as connection:
        judges = judge_rows(connection, visible)
        judged_ids = judges["vote_id"].to_numpy(np.int64)
        # without filters the report reads every vote: scanned in vote order, not sorted (``_vote_select``)
        arrays = vote_column_arrays(connection, visible, VOTE_COLUMNS, chunk, scan_votes=not filters.describe())
        for done, values in enumerate(arrays):
            if done % 20 == 19:
                release_free_memory()
            values["display"] = pc.fill_null(values["display"], "live")
            codes = {name: labels[name].codes(values[name]) for name in labels}
            participant, handed = values["participant_id"], values["handed_off"]
            keep(parts, "vote_id", values["vote_id"])
            keep(parts, "participant_id", participant)
            keep(parts, "handed_off", handed)
            for name in labels:
                keep(parts, name, _small(codes[name], labels[name]))
            # what quality_flags reads besides the labels: the shorter answer's tokens stand for both arms
            # (it takes their minimum) and either arm's origin flag for both (it takes their "or")
            keep(parts, "time_to_vote_ms", values["time_to_vote_ms"])
            keep(parts, "created_at", values["created_at"])  # naive UTC, 8 bytes a vote
            keep(parts, "shorter", np.fmin(values["on_tokens"], values["off_tokens"]))
            keep(parts, "reveals", values["on_reveals"] | values["off_reveals"])
            arm, pane = values["winner_arm"], values["winner"]
            decided = handed & _is_in(arm, ["on", "off"]) & _is_in(pane, ["a", "b"])
            at = np.flatnonzero(decided)
            if at.size:
                on = style_floats(values["on_style"].take(at), stats.STYLE_FEATURES)
                off = style_floats(values["off_style"].take(at), stats.STYLE_FEATURES)
                styled = ~np.isnan(on[0]) & ~np.isnan(off[0])
                at = at[styled]
                keep(style_parts, "participant_id", participant[at])
                for name in STYLE_ROW_LABELS:
                    keep(style_parts, name, codes[name][at])
                for arm_style, floats in (("on_style", on), ("off_style", off)):
                    for feature, column in zip(stats.STYLE_FEATURES, floats, strict=True):
                        keep(style_parts, style_column(arm_style, feature), column[styled])
            on_latency, off_latency = values["on_latency_ms"], values["off_latency_ms"]
            at = np.flatnonzero(handed & ~np.isnan(on_latency) & ~np.isnan(off_latency))
            if at.size:
                keep(timing_parts, "participant_id", participant[at])
                for name in ("display", "handoff_side", "winner", "winner_arm"):
                    keep(timing_parts, name, codes[name][at])
                keep(timing_parts, "on_latency_ms", on_latency[at])
                keep(timing_parts, "off_latency_ms", off_latency[at])
                keep(timing_parts, "on_ttft_ms", values["on_ttft_ms"][at])
                keep(timing_parts, "off_ttft_ms", values["off_ttft_ms"][at])
            if judged_ids.size:
                at = np.flatnonzero(np.isin(values["vote_id"], judged_ids))
                judged_rows += zip(
                    values["vote_id"][at].tolist(),
                    participant[at].tolist(),
                    *(values[name].take(at).to_pylist() for name in ("winner_arm", "category", "prompt")),
                    strict=True,
                )
            del values, codes
    release_free_memory()
    empty = {"vote_id": np.int64, "participant_id": np.int64, "handed_off": bool, "time_to_vote_ms": np.float64}
    empty |= {"created_at": "datetime64[ns]", "shorter": np.float64, "reveals": bool}
    empty |= {name: np.int8 for name in labels}
    columns = {name: _joined(parts.pop(name)) if name in parts else np.zeros(0, dtype) for name, dtype in empty.items()}
    release_free_memory()
    flags = _report_flags(columns, labels, embed)
    inter_rater = stats.pairwise_agreement_cells(
        *_per_prompt_verdicts(columns["prompt"], columns["winner_arm"], len(labels["winner_arm"].index))
    )
    for name in ("vote_id", "prompt", "time_to_vote_ms", "created_at", "shorter", "reveals"):  # the flags' alone
        del columns[name]
    release_free_memory()
    votes = pd.DataFrame(
        {
            "participant_id": columns.pop("participant_id"),
            **{name: _label_column(name, columns.pop(name), labels[name]) for name in REPORT_LABELS},
            "handed_off": columns.pop("handed_off"),
        },
        copy=False,
    )
    style_names = ["participant_id", *STYLE_ROW_LABELS, *_style_columns()]
    style = _subset_frame(style_parts, style_names, labels)
    style["handed_off"] = True
    timing = _subset_frame(timing_parts, [c for c in LATENCY_COLUMNS if c != "handed_off"], labels)
    timing["handed_off"] = True
    judged = pd.DataFrame(judged_rows, columns=["vote_id", "participant_id", "winner_arm", "category", "prompt"])
    release_free_memory()  # the flags' chunks and the joined columns' parts: freed, given back
    return ReportVotes(votes, flags, style, timing, judged, judges, inter_rater)


def _is_in(values: pa.Array, labels: list[str]) -> np.ndarray:
    """Whether each value is one of ``labels`` (a null is not), as a bool array."""
    return pc.is_in(values, value_set=pa.array(labels, values.type)).to_numpy(zero_copy_only=False)


def _per_prompt_verdicts(prompt: np.ndarray, verdict: np.ndarray, verdicts: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt code, votes) per distinct (prompt, verdict) of the votes' codes (-1: none, a group of its own)."""
    width = verdicts + 1
    cells, n = np.unique((prompt.astype(np.int64) + 1) * width + verdict.astype(np.int64) + 1, return_counts=True)
    return cells // width - 1, n


def _label_column(name: str, codes: np.ndarray, labels: Labels) -> pd.Categorical:
    """A label column as a categorical; the live threshold keeps numeric categories (in first-seen order)."""
    if name == "threshold":
        return pd.Categorical.from_codes(codes, categories=pd.Index(list(labels.index), dtype=np.float64))
    return labels.categorical([codes])


def _joined(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0)


def _subset_frame(parts: dict[str, list[np.ndarray]], names: Sequence[str], labels: dict[str, Labels]) -> pd.DataFrame:
    """A section's rows as a frame: label codes become categoricals as in ``votes``, numbers stay as read."""
    built = {}
    for name in names:
        chunks = parts.pop(name, [])
        if name in labels:
            built[name] = labels[name].categorical(chunks) if chunks else pd.Categorical([], categories=[])
        elif name == "participant_id":
            built[name] = _joined(chunks).astype(np.int64)
        else:
            built[name] = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float64)
    return pd.DataFrame(built, copy=False)


def _report_flags(columns: dict[str, np.ndarray], labels: dict[str, Labels], embed: Embed | None) -> pd.DataFrame:
    """``quality_flags`` over whole participants, ``FLAG_CHUNK`` votes at a time, scattered back in vote order."""
    participant = columns["participant_id"]
    n = len(participant)
    out = {name: np.zeros(n, dtype=bool) for name in FILTERS}
    if n:
        order = np.argsort(participant, kind="stable")  # each participant's votes together, in vote order
        ordered = participant[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        cuts = np.unique(np.r_[starts[np.searchsorted(starts, np.arange(0, n, FLAG_CHUNK))], n])
        # categoricals over the labels as read (code -1: none): no string per vote in the chunks' frames
        prompts = pd.Index(list(labels["prompt"].index), dtype=object)
        winners = pd.Index(list(labels["winner"].index), dtype=object)
        for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
            at = order[start:stop]
            frame = pd.DataFrame(
                {
                    "vote_id": columns["vote_id"][at],
                    "participant_id": participant[at],
                    "prompt": pd.Categorical.from_codes(columns["prompt"][at], categories=prompts),
                    "winner": pd.Categorical.from_codes(columns["winner"][at], categories=winners),
                    "time_to_vote_ms": columns["time_to_vote_ms"][at],
                    "created_at": columns["created_at"][at],
                    "on_tokens": columns["shorter"][at],
                    "off_tokens": columns["shorter"][at],
                    "on_reveals": columns["reveals"][at],
                    "off_reveals": np.zeros(len(at), dtype=bool),
                }
            )
            flags = quality_flags(frame, embed)
            for name in FILTERS:
                out[name][at] = flags[name].to_numpy(bool)
    return pd.DataFrame(out, copy=False)


def report_research(data: ReportVotes, *, rounds: int, seed: int) -> dict[str, Any]:
    """Every research section of the report from ``ReportVotes`` (the same numbers ``research`` gives
    from the per-vote frame). Each section's own rows are handed over to it (``data.style``, ``timing`` and
    ``judged`` are left empty): it lets them go once it has read them, before its bootstrap fits."""

    def handed_over(name: str) -> pd.DataFrame:
        rows = getattr(data, name)
        setattr(data, name, rows.iloc[:0].copy())  # (a copy: an empty view would keep the rows' arrays)
        return rows

    sections = {
        "style_control": lambda: style_control(handed_over("style"), rounds=rounds, seed=seed),
        "latency": lambda: latency(data.votes, rounds=rounds, seed=seed, timing=handed_over("timing")),
        "vote_quality": lambda: vote_quality(data.votes, data.flags, rounds=rounds, seed=seed),
        "judges": lambda: judge_agreement(handed_over("judged"), data.judges, rounds=rounds, seed=seed),
    }
    out = {}
    for name, section in sections.items():
        out[name] = section()
        release_free_memory()  # a section's temporaries given back: the next one starts from what is held
    return out
