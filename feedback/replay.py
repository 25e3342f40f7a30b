"""Offline replay of handoff thresholds from stored scores, votes and shadow answers.

For a policy and a threshold ``t`` every turn's decision is recomputed as ``score >= t`` from the
stored score (``HandoffDecision.score`` for the live policy, ``signals["scores"][policy]`` for the
others), so at the live threshold the live handoff rate comes back exactly. Quality and cost at ``t``:

- turns that would hand off and did live: the vote and the cloud cost are observed;
- turns that would not hand off: both panes would show the local answer (no decided vote, no cost);
- turns that would hand off but stayed local live: only the shadow sample (cloud answer fetched with
  propensity π, never shown) stands for them, each weighted 1/π (inverse-propensity weighting). Its
  cost is observed; its outcome was never voted on, so it is imputed from live handed-off votes with a
  similar score (same score bin, nearest bin otherwise). ``imputed_share`` says how much of the
  estimate rests on that imputation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Float, Select, Text, and_, case, cast, func, literal_column, select
from sqlalchemy.orm import aliased

from db.arrow import json_objects, sqlite_arrow, sqlite_sql
from db.models import Answer, HandoffDecision, Turn, Vote
from db.session import get_engine
from db.visibility import vote_not_hidden
from feedback import stats
from feedback.export.dataset import ExportFilters, conversation_query

BINS = 20
CHUNK = 10_000  # rows read and turned into arrays at a time
SWEEP = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 21))
KEEP_GAIN = 0.8  # the recommended threshold keeps this share of the best quality gain, at least cost


class ReplayError(ValueError):
    """Nothing to replay (no stored decisions for this policy or filter); the message says why."""


@dataclass
class TurnTable:
    """One entry per turn, as arrays; ``vote`` is '' where no visible vote was cast."""

    live_policy: np.ndarray
    live_threshold: np.ndarray
    live_score: np.ndarray
    handed_off: np.ndarray
    scores: dict[str, np.ndarray]  # policy -> score per turn (nan where not stored)
    propensity: np.ndarray  # shadow propensity (nan when none)
    has_shadow: np.ndarray
    on_cost: np.ndarray  # cost of the shown handoff answer (0 when local)
    shadow_cost: np.ndarray
    vote: np.ndarray

    def __len__(self) -> int:
        return len(self.handed_off)

    def score(self, policy: str) -> np.ndarray:
        stored = self.scores.get(policy, np.full(len(self), np.nan))
        return np.where(self.live_policy == policy, self.live_score, stored)


@dataclass(frozen=True)
class ReplayPoint:
    threshold: float
    handoff_rate: float
    wins: float
    losses: float
    win_rate: float | None
    net_gain: float  # (wins - losses) per voted turn: quality gained over handoff off
    cost_per_1000: float
    imputed_share: float


@dataclass
class ReplayResult:
    policy: str
    turns: int
    voted: int
    live_handoff_rate: float | None
    live_thresholds: list[float]
    points: list[ReplayPoint] = field(default_factory=list)

    @property
    def recommended(self) -> ReplayPoint | None:
        """The cheapest threshold that keeps ``KEEP_GAIN`` (80 %) of the best quality gain.

        Cost counts: the last 20 % of the gain usually takes most of the handoffs (RouteLLM's CPT(80%)
        is the same trade). Where no threshold gains quality, the one that costs least.
        """
        if not self.points:
            return None
        best = max(p.net_gain for p in self.points)
        enough = [p for p in self.points if p.net_gain >= KEEP_GAIN * best] if best > 0 else self.points
        return min(enough, key=lambda p: (p.cost_per_1000, p.handoff_rate, -p.threshold))

    def routellm(self) -> dict[str, float | None]:
        """CPT(50%), CPT(80%) and APGR of this curve (``stats.performance_gap_recovered``)."""
        return stats.performance_gap_recovered(
            np.array([p.handoff_rate for p in self.points]), np.array([p.net_gain for p in self.points])
        )


def _turn_select(filters: ExportFilters) -> Select:
    """One row per stored decision of a consented, visible conversation (and per visible vote on its turn).

    Without filters (most turns are read) the turn's conversation is ``+ 0``: SQLite then scans the turns in id
    order, the order asked for, instead of reaching them per conversation and sorting the whole result."""
    on, shadow = aliased(Answer), aliased(Answer)
    visible = conversation_query(filters).subquery()
    conversation = Turn.conversation_id if filters.describe() else Turn.conversation_id + literal_column("0")
    return (
        select(
            HandoffDecision.policy,
            HandoffDecision.threshold,
            HandoffDecision.score,
            HandoffDecision.handed_off,
            cast(HandoffDecision.signals, Text),
            HandoffDecision.shadow_propensity,
            on.cost,
            on.source,
            shadow.id,
            shadow.cost,
            Vote.winner_arm,
        )
        .join(Turn, Turn.id == HandoffDecision.turn_id)
        .join(visible, visible.c.id == conversation)
        .outerjoin(on, and_(on.turn_id == Turn.id, on.arm == "on"))
        .outerjoin(shadow, and_(shadow.turn_id == Turn.id, shadow.arm == "shadow"))
        .outerjoin(Vote, and_(Vote.turn_id == Turn.id, vote_not_hidden()))
        .order_by(Turn.id)
    )


def load_turns(url: str, filters: ExportFilters) -> TurnTable:
    """Stored decisions of consented, visible conversations, read in a stream into arrays."""
    stmt = _turn_select(filters)
    parts: list[list[np.ndarray | None]] = []
    extra: dict[str, list[np.ndarray]] = {}
    shared: dict[str, str] = {}  # one str object per distinct policy / vote, not one per row (1M rows: ~100 MB)
    done = 0
    with get_engine(url).connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=CHUNK).execute(stmt)
        for rows in result.partitions(CHUNK):  # column-wise per chunk: arrays, not a list per value
            policy, threshold, score, handed, signals, prop, on_cost, on_source, shadow, shadow_cost, vote = zip(
                *rows, strict=False
            )
            parts.append(
                [
                    np.asarray([shared.setdefault(p, p) if p is not None else None for p in policy], dtype=object),
                    _floats(threshold),
                    _floats(score),
                    np.asarray([bool(h) for h in handed], dtype=bool),
                    _floats(prop),
                    np.asarray(
                        [
                            float(c) if c is not None and s == "cloud" else 0.0
                            for c, s in zip(on_cost, on_source, strict=False)
                        ]
                    ),
                    np.asarray([i is not None for i in shadow], dtype=bool),
                    np.asarray([float(c) if c is not None else 0.0 for c in shadow_cost], dtype=np.float64),
                    np.asarray([shared.setdefault(v, v) if v else "" for v in vote], dtype=object),
                ]
            )
            scores = [(orjson.loads(raw) or {}).get("scores") or {} if raw is not None else {} for raw in signals]
            for name in dict.fromkeys(name for row in scores for name in row):  # first-seen order
                extra.setdefault(name, [np.full(done, np.nan)])
            for name, chunks in extra.items():
                chunks.append(np.asarray([float(row[name]) if name in row else np.nan for row in scores]))
            done += len(rows)
    columns = [_concatenate(parts, i) for i in range(9)]
    live_policy, live_threshold, live_score, handed_off, propensity, on_cost_a, has_shadow, shadow_cost_a, votes = (
        columns
    )
    return TurnTable(
        live_policy=live_policy.astype(object),
        live_threshold=live_threshold.astype(np.float64),
        live_score=live_score.astype(np.float64),
        handed_off=handed_off.astype(bool),
        scores={k: np.concatenate(v) for k, v in extra.items()},
        propensity=propensity.astype(np.float64),
        has_shadow=has_shadow.astype(bool),
        on_cost=on_cost_a.astype(np.float64),
        shadow_cost=shadow_cost_a.astype(np.float64),
        vote=votes.astype(object),
    )


def _concatenate(parts: list[list[np.ndarray | None]], i: int) -> np.ndarray:
    """Column ``i`` of all chunks in one array, releasing the chunks' copies as it goes (no doubled peak)."""
    if not parts:
        return np.asarray([])
    column = np.concatenate([part[i] for part in parts])
    for part in parts:
        part[i] = None
    return column


def _floats(values: tuple) -> np.ndarray:
    """Nullable numbers as float64, NULL as nan."""
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


VOTE_CODES = ("", "on", "off")  # a cell's vote: none, the handoff arm, the local arm; 3 = any other verdict


@dataclass
class ReplayCells:
    """The turns of one policy summed into cells, enough to replay a known set of thresholds: where the
    replay's rule lives, for the loaded table (``replay``) and the report's stream (``replay_summary``).

    A cell is (how many ``thresholds`` are <= the turn's score, score bin, handed off live, vote code):
    a threshold in the set hands off exactly the turns of the cells above it, and the outcome model and
    the imputation work per score bin, so a few thousand numbers stand for a dozen per turn (turns summed
    in other chunks add weights and costs in another order: the same to the last bits or so)."""

    thresholds: np.ndarray  # sorted distinct thresholds the cells resolve
    count: np.ndarray  # turns per cell
    weight: np.ndarray  # Σ inverse-propensity weight (0 without a shadow answer)
    shadow_cost: np.ndarray  # Σ weight x shadow answer cost
    on_cost: np.ndarray  # Σ cost of the shown handoff answer

    def __init__(self, thresholds: np.ndarray) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        size = (len(self.thresholds) + 1) * BINS * 2 * 4
        self.count = np.zeros(size, dtype=np.int64)
        self.weight, self.shadow_cost, self.on_cost = np.zeros(size), np.zeros(size), np.zeros(size)

    def add(
        self,
        score: np.ndarray,
        handed: np.ndarray,
        vote: np.ndarray,
        has_shadow: np.ndarray,
        propensity: np.ndarray,
        on_cost: np.ndarray,
        shadow_cost: np.ndarray,
    ) -> None:
        """Sum turns into the cells (``vote``: ``vote_codes``; nan scores left out). A turn kept local live
        stands for the handoff it would have had through its shadow answer, weighted 1/``propensity``."""
        covered = ~np.isnan(score)
        s = score[covered]
        above = np.searchsorted(self.thresholds, s, side="right")
        bins = np.clip((s * BINS).astype(int), 0, BINS - 1)
        cell = ((above * BINS + bins) * 2 + handed[covered].astype(np.int64)) * 4 + vote[covered]
        size = len(self.count)
        self.count += np.bincount(cell, minlength=size)
        weight = np.nan_to_num(np.where(has_shadow, 1.0 / propensity, 0.0), nan=0.0, posinf=0.0)
        w = weight[covered]
        self.weight += np.bincount(cell, weights=w, minlength=size)
        self.shadow_cost += np.bincount(cell, weights=w * shadow_cost[covered], minlength=size)
        self.on_cost += np.bincount(cell, weights=on_cost[covered], minlength=size)

    def replay(self, policy: str, thresholds: Iterable[float], live_thresholds: list[float], live_rate: float | None):
        """Handoff rate, estimated win rate, quality gain and cost at each of ``thresholds`` (each one of the
        cells' thresholds, else ValueError); ``live_thresholds`` and ``live_rate`` are the caller's to give."""
        shape = (len(self.thresholds) + 1, BINS, 2, 4)
        count, weight = self.count.reshape(shape), self.weight.reshape(shape)
        shadow_cost, on_cost = self.shadow_cost.reshape(shape), self.on_cost.reshape(shape)
        turns = int(count.sum())
        if turns == 0:
            raise ReplayError(f"No stored scores for policy {policy!r} in this selection; nothing to replay.")
        voted = int(count[..., 1:].sum())
        result = ReplayResult(
            policy=policy, turns=turns, voted=voted, live_handoff_rate=live_rate, live_thresholds=live_thresholds
        )
        # the outcome model: P(win), P(loss) per score bin among handed-off voted turns, the nearest filled bin
        # standing in for an empty one
        observed = count[:, :, 1, 1:].sum(axis=0)  # (bins, vote codes 1..3)
        n = observed.sum(axis=1).astype(float)
        filled = np.flatnonzero(n)
        if filled.size == 0:
            p_win = p_loss = np.full(BINS, np.nan)
        else:
            nearest = filled[np.abs(np.arange(BINS)[:, None] - filled[None, :]).argmin(axis=1)]
            p_win = (observed[:, 0] / np.maximum(n, 1))[nearest]
            p_loss = (observed[:, 1] / np.maximum(n, 1))[nearest]
        for t in sorted(set(thresholds)):
            at = np.searchsorted(self.thresholds, t)
            if at == len(self.thresholds) or self.thresholds[at] != t:
                raise ValueError(f"threshold {t} is not among the cells' thresholds")
            d = slice(at + 1, None)  # cells whose score is >= t
            wins_seen, losses_seen = float(count[d, :, 1, 1].sum()), float(count[d, :, 1, 2].sum())
            unseen = weight[d, :, 0, 1:].sum(axis=(0, 2))  # Σ weight per bin of voted turns not handed off live
            wins_imp = float((unseen * np.nan_to_num(p_win)).sum())
            losses_imp = float((unseen * np.nan_to_num(p_loss)).sum())
            wins, losses = wins_seen + wins_imp, losses_seen + losses_imp
            cost = float(on_cost[d, :, 1].sum() + shadow_cost[d, :, 0].sum())
            result.points.append(
                ReplayPoint(
                    threshold=float(t),
                    handoff_rate=float(count[d].sum()) / turns,
                    wins=wins,
                    losses=losses,
                    win_rate=wins / (wins + losses) if wins + losses > 0 else None,
                    net_gain=(wins - losses) / max(voted, 1),
                    cost_per_1000=cost / turns * 1000,
                    imputed_share=(wins_imp + losses_imp) / (wins + losses) if wins + losses > 0 else 0.0,
                )
            )
        return result


def vote_codes(vote: np.ndarray) -> np.ndarray:
    """Each verdict's index in ``VOTE_CODES`` ('' for none), 3 for any other verdict."""
    codes = np.full(len(vote), 3, dtype=np.int64)
    for code, verdict in enumerate(VOTE_CODES):
        codes[vote == verdict] = code
    return codes


def replay(table: TurnTable, policy: str, thresholds: Iterable[float]) -> ReplayResult:
    """Handoff rate, estimated win rate, quality gain and cost at each threshold for ``policy``: the table's
    turns summed into ``ReplayCells`` at these thresholds, the rule's one home."""
    live = table.live_policy == policy
    chosen = np.unique(np.asarray(list(thresholds), dtype=np.float64))
    cells = ReplayCells(chosen)
    cells.add(
        table.score(policy),
        table.handed_off,
        vote_codes(table.vote),
        table.has_shadow,
        table.propensity,
        table.on_cost,
        table.shadow_cost,
    )
    live_thresholds = sorted({float(t) for t in table.live_threshold[live]})
    live_rate = float(table.handed_off[live].mean()) if live.any() else None
    return cells.replay(policy, chosen.tolist(), live_thresholds, live_rate)


@dataclass(frozen=True)
class Calibration:
    """A threshold chosen to meet a target, and what it gives on the stored turns."""

    policy: str
    threshold: float
    target: str
    point: ReplayPoint


def calibrate(
    table: TurnTable, policy: str, *, target_handoff_rate: float | None = None, budget_per_1000: float | None = None
) -> Calibration:
    """The threshold meeting a handoff share (RouteLLM's calibration: the (1 − share) quantile of the
    stored scores) or a cloud budget per 1,000 prompts (the lowest threshold whose replayed cost fits)."""
    score = table.score(policy)
    covered = score[~np.isnan(score)]
    if covered.size == 0:
        raise ReplayError(f"No stored scores for policy {policy!r} in this selection; nothing to calibrate.")
    if target_handoff_rate is not None:
        if not 0.0 <= target_handoff_rate <= 1.0:
            raise ReplayError("--target-handoff-rate is a share: give a number between 0 and 1.")
        threshold = stats.calibrate_threshold(covered, target_handoff_rate)
        point = replay(table, policy, [threshold]).points[0]
        return Calibration(policy, threshold, f"handoff rate {target_handoff_rate:g}", point)
    if budget_per_1000 is None or budget_per_1000 < 0:
        raise ReplayError("Give --target-handoff-rate R or --budget-per-1000 X (a cost of at least 0).")
    candidates = np.unique(np.concatenate([np.quantile(covered, np.linspace(0, 1, 401)), [np.inf]]))
    result = replay(table, policy, candidates)
    fitting = [p for p in result.points if p.cost_per_1000 <= budget_per_1000]
    point = min(fitting, key=lambda p: p.threshold)  # the +inf threshold (never) always fits
    return Calibration(policy, point.threshold, f"cloud cost {budget_per_1000:g} per 1,000 prompts", point)


def default_policy(table: TurnTable) -> str:
    """The live policy of most turns."""
    names, counts = np.unique(table.live_policy.astype(str), return_counts=True)
    if names.size == 0:
        raise ReplayError("No stored handoff decisions in this selection; run some prompts (or `handoff demo-data`).")
    return str(names[counts.argmax()])


def replay_database(
    url: str, filters: ExportFilters, policy: str | None = None, thresholds: Sequence[float] | None = None
) -> ReplayResult:
    """Load, then replay the live threshold(s) plus ``thresholds`` (default: a sweep 0.00 … 1.00)."""
    table = load_turns(url, filters)
    policy = policy or default_policy(table)
    live = {float(t) for t in table.live_threshold[table.live_policy == policy]}
    return replay(table, policy, [*(SWEEP if thresholds is None else thresholds), *live])


__all__ = [
    "Calibration",
    "ReplayError",
    "ReplayPoint",
    "ReplayResult",
    "TurnTable",
    "calibrate",
    "default_policy",
    "load_turns",
    "replay",
    "replay_database",
]


# --- The report's replay: turns aggregated into cells as they are read -------------------------------


@dataclass
class TurnSummary:
    """What the report reads of the stored decisions (``replay_summary``).

    ``turns``: decision rows; ``result``: the replay of the default policy at ``SWEEP`` and every live
    threshold (None without decisions or scores); ``decided_scores``: per policy name (stored and live),
    its score on each handed-off turn with a decided vote (nan where not stored); ``decided_won``: whether
    the handoff arm won that vote."""

    turns: int
    result: ReplayResult | None
    decided_scores: dict[str, np.ndarray]
    decided_won: np.ndarray


def _live_groups(url: str, filters: ExportFilters) -> list[tuple[str | None, float, int, int]]:
    """(live policy, live threshold, turns handed off, turns) per live policy and threshold (one GROUP BY)."""
    turns = _turn_select(filters).order_by(None).subquery()
    stmt = select(
        turns.c.policy,
        turns.c.threshold,
        func.sum(case((turns.c.handed_off, 1), else_=0)),
        func.count(),
    ).group_by(turns.c.policy, turns.c.threshold)
    with get_engine(url).connect() as connection:
        return [(p, np.nan if t is None else float(t), int(h or 0), int(n)) for p, t, h, n in connection.execute(stmt)]


# a chunk of turns: (live policy as objects, live score, handed off, propensity, has shadow, on cost, shadow cost,
# vote code of ``VOTE_CODES``), and per policy name seen its stored score (nan where not stored)
Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
TurnChunks = Iterator[tuple[Columns, dict[str, np.ndarray]]]


def _turn_rows(url: str, filters: ExportFilters) -> TurnChunks:
    """The turns ``CHUNK`` rows at a time through SQLAlchemy, each signals' JSON parsed in Python."""
    with get_engine(url).connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=CHUNK).execute(_turn_select(filters))
        for chunk in result.partitions(CHUNK):
            live_policy, _, live_score, handed, signals, prop, on_cost, on_source, shadow, shadow_cost, vote = zip(
                *chunk, strict=False
            )
            scores = [(orjson.loads(raw) or {}).get("scores") or {} if raw is not None else {} for raw in signals]
            names = dict.fromkeys([*(n for row in scores for n in row), *(str(p) for p in live_policy)])
            columns = (
                np.asarray(live_policy, dtype=object),
                _floats(live_score),
                np.asarray([bool(h) for h in handed], dtype=bool),
                _floats(prop),
                np.asarray([i is not None for i in shadow], dtype=bool),
                np.asarray(
                    [
                        float(c) if c is not None and s == "cloud" else 0.0
                        for c, s in zip(on_cost, on_source, strict=False)
                    ],
                    dtype=np.float64,
                ),
                np.asarray([float(c) if c is not None else 0.0 for c in shadow_cost], dtype=np.float64),
                vote_codes(np.asarray([v or "" for v in vote], dtype=object)),
            )
            yield columns, {n: np.asarray([float(r[n]) if n in r else np.nan for r in scores]) for n in names}


def _turn_arrow(url: str, filters: ExportFilters, live_names: Iterable[str]) -> TurnChunks | None:
    """``_turn_rows`` read as Arrow columns by ADBC's SQLite driver (``db.arrow``), the rest computed in SQL, no
    Python per row. The stored scores: each turn's ``signals["scores"]`` object picked out by SQLite's
    ``json_extract`` (one JSON parse a turn) and parsed a chunk at a time by Arrow's JSON reader
    (``_stored_scores``; checked: the same doubles as ``json_extract`` of each score, and as ``orjson``), every
    name of ``live_names`` (the live policies) among them. None where that reader can't run (not a SQLite
    file, the driver missing): read ``_turn_rows`` then."""
    engine = get_engine(url)
    arrow = sqlite_arrow(engine)
    if arrow is None:
        return None
    live_names = sorted(live_names)
    turns = _turn_select(filters).subquery()
    c = list(turns.c)  # _turn_select's columns, in its order
    policy, _, score, handed, signals, propensity, on_cost, on_source, shadow, shadow_cost, vote = c
    zero = literal_column("0.0")  # literals, not parameters: ``sqlite_sql`` takes no converted parameter

    def real(value: Any, name: str) -> list[Any]:  # a nullable number as a REAL (0 for NULL) and its NULL flag
        return [func.coalesce(cast(value, Float), zero).label(name), value.is_(None).label(f"{name}_null")]

    codes = case(*((func.coalesce(vote, "") == v, i) for i, v in enumerate(VOTE_CODES)), else_=3)
    picked = [
        func.coalesce(policy, "").label("policy"),
        *real(score, "score"),
        func.coalesce(handed, literal_column("0")).label("handed_off"),
        *real(propensity, "propensity"),
        shadow.is_not(None).label("has_shadow"),
        cast(case((and_(on_source == "cloud", on_cost.is_not(None)), on_cost), else_=zero), Float).label("on_cost"),
        cast(func.coalesce(shadow_cost, zero), Float).label("shadow_cost"),
        codes.label("vote"),
        cast(
            func.coalesce(func.json_extract(signals, literal_column("'$.scores'")), literal_column("'{}'")), Text
        ).label("scores"),
    ]
    compiled = sqlite_sql(select(*picked), engine)
    if compiled is None:
        arrow.close()
        return None
    as_stored = Answer.cost.type.result_processor(engine.dialect, None)  # what SQLAlchemy returns: a Decimal

    def cost(batch: pa.RecordBatch, name: str) -> np.ndarray:
        values = batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        if as_stored is not None:  # the row reader's float(Decimal): the same numbers, so the same sums
            at = np.flatnonzero(values)
            values[at] = [float(as_stored(v)) for v in values[at].tolist()]
        return values

    def floats(batch: pa.RecordBatch, name: str) -> np.ndarray:
        values = batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        values[batch.column(f"{name}_null").to_numpy(zero_copy_only=False).astype(bool)] = np.nan
        return values

    def read() -> TurnChunks:
        try:
            for batch in arrow.batches(*compiled, rows=CHUNK):
                if not batch.num_rows:
                    continue
                columns = (
                    batch.column("policy").to_numpy(zero_copy_only=False).astype(object),
                    floats(batch, "score"),
                    batch.column("handed_off").to_numpy(zero_copy_only=False).astype(bool),
                    floats(batch, "propensity"),
                    batch.column("has_shadow").to_numpy(zero_copy_only=False).astype(bool),
                    cost(batch, "on_cost"),
                    cost(batch, "shadow_cost"),
                    batch.column("vote").to_numpy(zero_copy_only=False).astype(np.int64),
                )
                stored = _stored_scores(batch.column("scores"))
                yield (
                    columns,
                    {name: stored.get(name, np.full(batch.num_rows, np.nan)) for name in [*stored, *live_names]},
                )
        finally:
            arrow.close()

    return read()


def _stored_scores(objects: pa.Array) -> dict[str, np.ndarray]:
    """Per name in a chunk's ``signals["scores"]`` objects (JSON text, one a turn), its score on each turn
    (nan where not stored), parsed by Arrow's JSON reader; where it can't (a score that is not a number, a
    scores value that is not an object), per turn with ``orjson`` (a non-number reads as nan)."""
    table = json_objects(objects)
    if table is not None:
        return {
            name: pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
            for name in table.column_names
        }
    parsed = [orjson.loads(text) for text in objects.to_pylist()]
    rows = [row if isinstance(row, dict) else {} for row in parsed]
    names = dict.fromkeys(name for row in rows for name in row)

    def number(value: Any) -> float:
        return float(value) if isinstance(value, (int, float)) else np.nan

    return {name: np.asarray([number(row.get(name)) for row in rows], dtype=np.float64) for name in names}


def replay_summary(url: str, filters: ExportFilters, *, arrow: bool = True) -> TurnSummary:
    """The report's replay without a per-turn table: the live policies and thresholds first (one GROUP BY),
    then one stream over the turns summed into ``ReplayCells`` for the default policy (``default_policy``),
    keeping per turn only the scores of handed-off turns with a decided vote (for their AUROC). The same
    numbers as ``replay(load_turns(...), default_policy(table), [*SWEEP, *live thresholds])``.

    ``arrow``: on a SQLite file, read the turns as Arrow columns (``_turn_arrow``); else, or without the
    driver, row by row (``_turn_rows``). Both give the same numbers."""
    groups = _live_groups(url, filters)
    rows = sum(n for *_, n in groups)
    if rows == 0:
        return TurnSummary(0, None, {}, np.zeros(0, dtype=bool))
    per_name: dict[str, int] = {}
    for p, _, _, n in groups:
        per_name[str(p)] = per_name.get(str(p), 0) + n
    names = sorted(per_name)
    policy = names[int(np.argmax([per_name[name] for name in names]))]
    live = [(t, h, n) for p, t, h, n in groups if p == policy]
    live_thresholds = sorted({float(t) for t, _, _ in live})
    live_rate = sum(h for _, h, _ in live) / sum(n for *_, n in live) if live else None
    thresholds = [*SWEEP, *{t for _, t, _, _ in groups if not np.isnan(t)}]
    cells = ReplayCells(np.unique(np.asarray(thresholds, dtype=np.float64)))
    decided_scores: dict[str, list[np.ndarray]] = {}  # per name, its score on each decided handed-off turn
    decided_won: list[np.ndarray] = []
    decided = 0
    chunks = _turn_arrow(url, filters, per_name) if arrow else None
    for columns, stored in _turn_rows(url, filters) if chunks is None else chunks:
        live_policy, live_score, handed, propensity, has_shadow, on_cost, shadow_cost, codes = columns
        own = stored.get(policy)
        cells.add(
            np.where(live_policy == policy, live_score, np.full(len(codes), np.nan) if own is None else own),
            handed,
            codes,
            has_shadow,
            propensity,
            on_cost,
            shadow_cost,
        )
        at = np.flatnonzero(handed & ((codes == 1) | (codes == 2)))
        policies = live_policy[at]
        # ``TurnTable.score`` per name: the live score where the name is the live policy, else the stored one;
        # a name first seen now (stored or live) had no score on the turns before
        for name in stored:
            decided_scores.setdefault(name, [np.full(decided, np.nan)])
        for name, parts in decided_scores.items():
            stored_name = stored[name][at] if name in stored else np.full(at.size, np.nan)
            parts.append(np.where(policies == name, live_score[at], stored_name))
        decided_won.append(codes[at] == 1)
        decided += at.size
    try:
        replayed = cells.replay(policy, [*SWEEP, *thresholds], live_thresholds, live_rate)
    except ReplayError:
        replayed = None
    by_name = {}
    for name in sorted(decided_scores):
        parts = decided_scores.pop(name)
        by_name[name] = np.concatenate(parts) if parts else np.zeros(0)
        del parts
    won = np.concatenate(decided_won) if decided_won else np.zeros(0, dtype=bool)
    return TurnSummary(rows, replayed, by_name, won)
