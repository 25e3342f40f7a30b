"""Every number of the improvement report, computed once into one JSON-ready dict.

The SQL lives in ``db.report`` (counts are GROUP BY aggregates over the votes that count); this
module turns its rows into segments, confidence intervals, a leaderboard and "what to improve".
Per vote it holds only ``research.ReportVotes`` (a few bytes a vote: codes, not strings) and the
replay's cells (``replay.replay_summary``), so its memory barely grows with the number of votes.
"""

from __future__ import annotations

import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from db import report as report_queries
from db.session import get_engine
from db.vocabulary import DECIDED, PANES, SHOWN_ARMS, WINNER_ARMS, arm_of, winner_pane
from feedback import research, stats
from feedback.embeddings import Embed
from feedback.export.arms import arm_names
from feedback.export.dataset import ExportFilters, conversation_query
from feedback.memory import release_free_memory
from feedback.redaction import redact
from feedback.replay import TurnSummary, replay_summary
from feedback.report.themes import comment_themes, prompt_clusters

SMALL = 30  # segments with fewer decided votes are flagged as small (shown, not hidden)
SAMPLE = 5_000  # comments / prompts read for themes and clusters
BY_COLUMNS = ("region", "event", "category", "language")  # the labels the report has a segment table for
PARTICIPANT_VOTE = ["participant_id", "winner_arm"]  # what a segment's participant bootstrap reads per vote
# the dimensions the report slices votes on (``research.REPORT_LABELS`` and ``handed_off``), then the count
VOTE_FACT_COLUMNS = (
    "event",
    "region",
    "category",
    "language",
    "handed_off",
    "policy",
    "threshold",
    "model_off",
    "handoff_side",
    "winner_arm",
    "n",
)


def full(value: float | None) -> float | None:
    """A JSON-ready number at full precision (nan as None); the report rounds what it shows (``stats.shown``)."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def segment(counts: pd.Series, *, rounds: int, seed: int) -> dict[str, Any]:
    """Win rate of the handoff arm over decided votes, with its CI and the other outcome rates."""
    c = {k: int(counts.get(k, 0)) for k in WINNER_ARMS}
    votes = sum(c.values())
    wins, losses = c["on"], c["off"]
    ci = stats.bootstrap_ci(wins, losses, rounds=rounds, seed=seed)
    return {
        "votes": votes,
        "decided": wins + losses,
        "handoff_on_wins": wins,
        "handoff_off_wins": losses,
        "handoff_on_win_rate": full(stats.win_rate(wins, losses)),
        "ci95": [full(ci[0]), full(ci[1])] if ci else None,
        "tie_rate": full(c["tie"] / votes) if votes else None,
        "both_bad_rate": full(c["both_bad"] / votes) if votes else None,
        "identical_rate": full(c["identical"] / votes) if votes else None,
        "small": wins + losses < SMALL,
    }


def _vote_facts(votes: pd.DataFrame) -> pd.DataFrame:
    """Vote counts grouped by every dimension the report slices on (one small frame, ``VOTE_FACT_COLUMNS``;
    labels as text, None for NULL), counted from the votes already read (``research.ReportVotes.votes``)
    instead of a second pass of the database over the same joins."""
    dimensions = VOTE_FACT_COLUMNS[:-1]
    # one number per combination (mixed radix over the codes, 0 for a missing label), built a column at a time:
    # a million votes' group keys in one int64 array, not pandas' per-column arrays of a ten-key groupby
    sizes = [2 if name == "handed_off" else len(votes[name].cat.categories) + 1 for name in dimensions]
    if math.prod(sizes) >= 1 << 62:  # too many combinations for one int64: pandas groups them (more memory)
        frame = votes.groupby(list(dimensions), observed=True, dropna=False).size().reset_index(name="n")
        for name in dimensions:
            if name != "handed_off":
                frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
        return frame.astype({"handed_off": bool, "n": np.int64})
    key = np.zeros(len(votes), dtype=np.int64)
    for name, size in zip(dimensions, sizes, strict=True):
        key *= size
        key += votes[name].to_numpy(bool) if name == "handed_off" else votes[name].cat.codes.to_numpy() + 1
    combos, n = np.unique(key, return_counts=True)
    del key
    columns: dict[str, Any] = {}
    for name, size in zip(reversed(dimensions), reversed(sizes), strict=True):
        combos, code = np.divmod(combos, size)
        if name == "handed_off":
            columns[name] = code.astype(bool)
        else:
            labels = np.asarray(votes[name].cat.categories, dtype=object)
            columns[name] = np.where(code > 0, labels[np.maximum(code - 1, 0)] if len(labels) else None, None)
    return pd.DataFrame({**{name: columns[name] for name in dimensions}, "n": n.astype(np.int64)})


def _by(frame: pd.DataFrame, column: str, votes: pd.DataFrame, *, rounds: int, seed: int) -> dict[str, Any]:
    out = {}
    labels = votes[column]  # a categorical (``research.ReportVotes``): a key is compared as a code, no text per vote
    names = {str(name): name for name in labels.cat.categories}
    for key, group in frame.groupby(column, sort=True):
        seg = segment(group.groupby("winner_arm")["n"].sum(), rounds=rounds, seed=seed)
        mask = (labels == names[str(key)]).to_numpy() if str(key) in names else np.zeros(len(votes), dtype=bool)
        picked = votes.loc[mask, PARTICIPANT_VOTE]
        out[str(key)] = _by_participants(seg, picked, rounds=rounds, seed=seed)
    return out


def _by_participants(seg: dict[str, Any], votes: pd.DataFrame, *, rounds: int, seed: int) -> dict[str, Any]:
    """The segment's CI from a participant (cluster) bootstrap, and how many people it rests on."""
    decided = votes[votes["winner_arm"].isin(["on", "off"])]
    result = stats.cluster_win_rate(
        decided["participant_id"].to_numpy(), (decided["winner_arm"] == "on").to_numpy(), rounds=rounds, seed=seed
    )
    return {**seg, "ci95": result["ci95"], "participants": result["participants"]}


def _by_columns(frame: pd.DataFrame, votes: pd.DataFrame, *, rounds: int, seed: int) -> dict[str, Any]:
    """The segments per region, event, category and language (``_by``), in the summary's order."""
    return {f"by_{column}": _by(frame, column, votes, rounds=rounds, seed=seed) for column in BY_COLUMNS}


def _leaderboard(votes: pd.DataFrame, *, rounds: int, seed: int) -> dict[str, Any]:
    """Bradley-Terry arms with intervals that resample participants (counted per participant and setup).

    ``votes``' labels are categoricals (``research.ReportVotes``): a battle's setup (policy, threshold,
    model, side, verdict) is a combination of their codes, named once per distinct combination; the
    participants' battles are counted per (participant, combination) on integer codes, not in a frame."""
    keys = ["policy", "threshold", "model_off", "handoff_side", "winner_arm"]
    battle = votes["winner_arm"].isin(["on", "off", "tie", "both_bad"]).to_numpy()
    if not battle.any():
        return {"participants": 0, "arms": []}
    sizes = [len(votes[key].cat.categories) + 1 for key in keys]  # codes + 1: 0 for a missing label
    setup = np.zeros(int(battle.sum()), dtype=np.int64)
    for key, size in zip(keys, sizes, strict=True):  # one number per setup (mixed radix), not a row of five
        setup *= size
        setup += votes[key].cat.codes.to_numpy()[battle] + 1
    combos, combo = np.unique(setup, return_inverse=True)
    del setup
    people, participant = np.unique(votes["participant_id"].to_numpy()[battle], return_inverse=True)  # sorted ids

    def label(key: str, code: int) -> Any:
        return votes[key].cat.categories[code - 1] if code > 0 else None

    names = []  # (model_a, model_b, winner) per combination
    for number in combos.tolist():
        codes = []
        for size in reversed(sizes):
            number, code = divmod(number, size)
            codes.append(code)
        policy, threshold, model_off, side, winner_arm = (
            label(k, c) for k, c in zip(keys, reversed(codes), strict=True)
        )
        arms = arm_names(model_off, policy or None, np.nan if threshold is None else float(threshold))
        a, b = (arm_of(pane, side) for pane in PANES)
        winner = f"model_{winner_pane(winner_arm, side)}" if winner_arm in DECIDED else "tie"
        names.append((arms[a], arms[b], winner))
    per_combo = pd.DataFrame(names, columns=["model_a", "model_b", "winner"])
    per_combo["n"] = np.bincount(combo, minlength=len(combos))
    matchups, outcomes, models, _ = stats.preprocess_for_bt(per_combo)
    _, row = np.unique(np.column_stack([*stats.preprocess_rows(per_combo, models)]), axis=0, return_inverse=True)
    cells, n = np.unique(participant * len(combos) + combo, return_counts=True)
    del participant, combo
    ratings, boot = stats.cluster_bootstrap_bt_counts(
        (cells // len(combos)).astype(np.int32),
        len(people),
        row.reshape(-1)[cells % len(combos)].astype(np.int32),
        n,
        matchups,
        outcomes,
        models,
        rounds=rounds,
        seed=seed,
    )
    counts = (
        pd.concat([per_combo.set_index("model_a")["n"], per_combo.set_index("model_b")["n"]]).groupby(level=0).sum()
    )
    return {
        "participants": len(people),
        "arms": [
            {
                "arm": arm,
                "rating": full(rating),
                "lower": full(boot[arm].quantile(0.025)),
                "upper": full(boot[arm].quantile(0.975)),
                "battles": int(counts[arm]),
            }
            for arm, rating in ratings.items()
        ],
    }


def _leaderboard_fields(board: dict[str, Any]) -> dict[str, Any]:
    return {"leaderboard": board["arms"], "leaderboard_participants": board["participants"]}


def _position_bias(frame: pd.DataFrame) -> dict[str, Any]:
    decided = frame[frame.winner_arm.isin(DECIDED)]
    panes = [winner_pane(arm, side) for arm, side in zip(decided.winner_arm, decided.handoff_side, strict=True)]
    left = decided["n"][pd.Series(panes, index=decided.index, dtype=object) == PANES[0]].sum()
    total = int(decided["n"].sum())
    return {"decided": total, "left_wins": int(left), "left_win_rate": full(left / total) if total else None}


@dataclass
class _Queried:
    """What the summary reads from the database besides the votes and the replay (``_query``): the
    aggregates and bounded samples of ``db.report``."""

    handoff_totals: tuple[int, int, float]
    added_latencies: np.ndarray
    energy: Any
    stars: list[Any]
    tags: list[Any]
    worst: dict[str, list[Any]]
    comments: list[str]
    prompts: list[Any]


def _query(url: str, filters: ExportFilters) -> _Queried:
    """Every query of the summary but the votes' and the replay's reads, in a connection of its own:
    ``compute_summary`` runs this in a thread beside the votes' read and the research sections (SQLite
    steps without the GIL), so both cores work at once on what used to wait in turn. The same statements
    as before, so the same rows and sums; what they return is small (aggregates, bounded samples, one
    latency per handed-off turn). The replay's per-turn stream follows in the same thread, beside the
    research sections (``compute_summary``: ~30 MiB more at their peak at 1M, 1.22x the 100k peak)."""
    conversations = conversation_query(filters)
    with get_engine(url).connect() as connection:
        totals = report_queries.handoff_totals(connection, conversations)
        added = np.fromiter(report_queries.added_latencies(connection, conversations), dtype=np.float64)
        energy = report_queries.energy_totals(connection, conversations)
        ratings = report_queries.rating_groups(connection, conversations)  # one pass for stars and tags
        stars, tags = report_queries.star_counts(ratings), report_queries.tag_lists(ratings)
        worst = {arm: report_queries.worst_rated(connection, conversations, arm, 3) for arm in SHOWN_ARMS}
        comments = report_queries.latest_comments(connection, conversations, SAMPLE)
        prompts = report_queries.decided_prompts(connection, conversations, SAMPLE)
    return _Queried(totals, added, energy, stars, tags, worst, comments, prompts)


def _handoff(queried: _Queried, turns: TurnSummary) -> dict[str, Any]:
    (turns_decided, handed, cost), added = queried.handoff_totals, queried.added_latencies
    out: dict[str, Any] = {
        "turns": int(turns_decided or 0),
        "handed_off": int(handed or 0),
        "handoff_rate": full(handed / turns_decided) if turns_decided else None,
        "cost_per_1000_prompts": full(float(cost or 0) / turns_decided * 1000) if turns_decided else None,
        "added_latency_ms_p50": full(stats.percentile(added, 50)),
        "added_latency_ms_p95": full(stats.percentile(added, 95)),
        "replay": None,
        "auroc": {},
    }
    result = turns.result
    if turns.turns == 0 or result is None:
        return out
    best = result.recommended
    out["replay"] = {
        "policy": result.policy,
        "live_thresholds": [full(t) for t in result.live_thresholds],
        "live_handoff_rate": full(result.live_handoff_rate),
        "recommended_threshold": full(best.threshold) if best else None,
        "recommended_rule": (
            "the cheapest threshold keeping 80% of the best quality gain (or the cheapest, where none gains)"
        ),
        "routellm": {k: full(v) for k, v in result.routellm().items()},
        "curve": [
            {
                "threshold": full(p.threshold),
                "handoff_rate": full(p.handoff_rate),
                "win_rate": full(p.win_rate),
                "net_gain": full(p.net_gain),
                "cost_per_1000": full(p.cost_per_1000),
                "imputed_share": full(p.imputed_share),
            }
            for p in result.points
        ],
    }
    for name, scores in turns.decided_scores.items():
        keep = ~np.isnan(scores)
        value = stats.auroc(scores[keep], turns.decided_won[keep])
        out["auroc"][name] = {"auroc": full(value), "n": int(keep.sum())}
    return out


def _energy(queried: _Queried) -> dict[str, Any]:
    """Estimated energy (feedback.energy) and cloud cost per 1,000 prompts for each arm (db.analytics rule)."""
    prompts, local_wh, handoff_wh, cost = queried.energy

    def per_1000(total: Any) -> float | None:
        return full(float(total) * 1000 / prompts) if prompts else None

    return {
        "prompts_with_estimates": int(prompts),
        "local_wh_per_1000_prompts": per_1000(local_wh),
        "handoff_wh_per_1000_prompts": per_1000(handoff_wh),
        "handoff_cost_per_1000_prompts": per_1000(cost),
        "method": "cloud: EcoLogits from model and output tokens; local: measured compute time x device power",
    }


def _ratings(queried: _Queried, inter_rater: tuple[int, int, float | None]) -> dict[str, Any]:
    distribution: dict[str, dict[str, int]] = {}
    for arm, stars, n in queried.stars:
        distribution.setdefault(arm, {str(s): 0 for s in range(1, 6)})[str(stars)] = int(n)
    mean = {
        arm: full(sum(int(s) * n for s, n in d.items()) / max(sum(d.values()), 1)) for arm, d in distribution.items()
    }
    tags: dict[str, Counter[str]] = {}
    for arm, raw, n in queried.tags:
        counter = tags.setdefault(arm, Counter())
        for tag in orjson.loads(raw) or []:
            counter[tag] += n
    # inter-rater: prompts voted on more than once, verdict counts per prompt (``research.ReportVotes``)
    repeated, pairs, agreement = inter_rater
    return {
        "stars": distribution,
        "mean_stars": mean,
        "tags": {arm: dict(counter.most_common(8)) for arm, counter in sorted(tags.items())},
        "inter_rater": {
            "prompts_rated_more_than_once": repeated,
            "verdict_pairs": pairs,
            "agreement": full(agreement),
        },
    }


def _examples(queried: _Queried, embed: Embed | None) -> dict[str, Any]:
    worst = []
    for arm in SHOWN_ARMS:
        worst += [
            {
                "arm": arm,
                "stars": int(s),
                "category": c or "unknown",
                "prompt": redact(p)[:200],
                "answer": redact(t)[:200],
            }
            for s, p, t, c in queried.worst[arm]
        ]
    comments = [redact(c) for c in queried.comments]
    prompts = queried.prompts
    return {
        "worst_rated": worst,
        "comment_themes": comment_themes(comments, embed),
        # clustered on redacted prompts: a cluster's label is a representative prompt, shown in the report
        "prompt_clusters": prompt_clusters(
            [redact(p) for p, _, _ in prompts],
            [w == "on" for _, w, _ in prompts],
            [lang for _, _, lang in prompts],
            embed,
        ),
    }


def _findings(summary: dict[str, Any]) -> dict[str, list[str]]:
    """Short, concrete "what to improve" lists from the numbers above."""

    def ranked(section: str) -> list[tuple[str, dict]]:
        items = [(k, v) for k, v in summary[section].items() if v["handoff_on_win_rate"] is not None]
        return sorted(items, key=lambda kv: -kv[1]["handoff_on_win_rate"])

    loses = []
    for section, what in (("by_category", "category"), ("by_language", "language")):
        for key, seg in ranked(section)[:3]:
            if seg["handoff_on_win_rate"] > 0.5:
                flag = " (small sample)" if seg["small"] else ""
                loses.append(
                    f"{what} {key}: the local model loses `{stats.shown_text(seg['handoff_on_win_rate'], seg['ci95'])}` of "
                    f"`{seg['decided']}` decided votes{flag}; add {key} examples to its fine-tuning data."
                )
    for cluster in summary["improvement"]["prompt_clusters"][:3]:
        if cluster["handoff_on_win_rate"] is not None and cluster["handoff_on_win_rate"] > 0.5:
            loses.append(
                f"prompts like '{cluster['label']}': the local model loses `{stats.shown_text(cluster['handoff_on_win_rate'])}` "
                f"of `{cluster['decided']}` decided votes."
            )
    hurts = []
    for section in ("by_category", "by_language", "by_region", "by_event"):
        for key, seg in summary[section].items():
            ci = seg["ci95"]
            if ci and ci[1] < 0.5:
                hurts.append(
                    f"{section.removeprefix('by_')} {key}: the cloud answer is worse, handoff wins only "
                    f"`{stats.shown_text(seg['handoff_on_win_rate'], ci)}` (CI `{stats.shown_text(ci[0], ci)}`–`{stats.shown_text(ci[1], ci)}`); "
                    "raise the threshold there."
                )
    return {"local_loses_most": loses, "handoff_hurts": hurts}


def compute_summary(
    url: str, filters: ExportFilters, *, seed: int, rounds: int, embed: Embed | None = None
) -> dict[str, Any]:
    """All report numbers: headline, segments, leaderboard, handoff analysis, improvements, ratings,
    and the research controls (style, latency, vote quality, judges); full precision throughout.

    ``embed`` (``feedback.embeddings.embed``: the bundled sentence encoder) builds prompt clusters,
    comment themes and near-duplicate prompts; without it those are left out (exact duplicates only)."""
    with ThreadPoolExecutor(1, thread_name_prefix="report-queries") as pool:
        queried = pool.submit(_query, url, filters)  # beside the votes (``_query``)
        # then the replay's stream, as soon as ``_query`` is done: beside the research sections, whose
        # single-threaded parts (the style and latency rows, vote quality) leave the second core idle
        replayed = pool.submit(replay_summary, url, filters)
        data = research.load_report_votes(url, filters, embed)
        # the research sections first: then only the codes per vote are held (their rows, the flags let go)
        research_summary = research.report_research(data, rounds=rounds, seed=seed)
        votes, inter_rater = data.votes, data.inter_rater
        del data
        release_free_memory()
        frame = _vote_facts(votes)
        # the four label segments in the pool's thread (the replay is done by now) beside the overall ones and
        # the leaderboard here: their participant draws are numpy's, so the two threads overlap
        by_columns = pool.submit(_by_columns, frame, votes, rounds=rounds, seed=seed)
        summary: dict[str, Any] = {
            "filters": filters.describe(),
            "seed": seed,
            "rounds": rounds,
            "small_segment_threshold": SMALL,
            "overall": _by_participants(
                segment(frame.groupby("winner_arm")["n"].sum(), rounds=rounds, seed=seed),
                votes,
                rounds=rounds,
                seed=seed,
            ),
            "when_handed_off": _by_participants(
                segment(frame[frame.handed_off].groupby("winner_arm")["n"].sum(), rounds=rounds, seed=seed),
                votes.loc[votes.handed_off, PARTICIPANT_VOTE],
                rounds=rounds,
                seed=seed,
            ),
        }
        board = _leaderboard(votes, rounds=rounds, seed=seed)
        summary |= {
            **by_columns.result(),
            **_leaderboard_fields(board),
            "position_bias": _position_bias(frame),
        }
        del votes
        release_free_memory()
        fetched, turns = queried.result(), replayed.result()
    summary["handoff"] = _handoff(fetched, turns)
    del turns
    release_free_memory()
    summary |= {
        "ratings": _ratings(fetched, inter_rater),
        "energy": _energy(fetched),
        "improvement": _examples(fetched, embed),
    }
    summary["research"] = research_summary
    summary["improvement"]["findings"] = _findings(summary)
    summary["improvement"]["reason_tags"] = summary["ratings"]["tags"]
    return summary
