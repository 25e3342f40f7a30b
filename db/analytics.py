"""Aggregate queries behind the organizer's live overview and region comparison.

``overview`` reads the per-event rollups that ``db.rollups`` keeps on every write (a few small
queries however many votes there are: a refresh of one 333,580-vote event went from seconds to
milliseconds). The functions over the rows themselves (``counts``, ``verdicts``, … and
``overview_from_rows``) stay: they answer a ``since`` window, which is not rolled up, and they are
what the rollups are tested against. What counts is ``db.visibility``'s rule, the same as in
exports, reports, replay and the router.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from sqlalchemy import ColumnElement, Select, String, and_, case, func, select, true
from sqlalchemy.orm import Session, aliased

from db import rollups
from db.models import (
    REGIONS,
    Answer,
    Conversation,
    Event,
    HandoffDecision,
    Participant,
    Rating,
    RollupCount,
    RollupEnergy,
    RollupLatency,
    RollupVote,
    Turn,
    Vote,
)
from db.visibility import conversation_counts, counted_votes
from db.vocabulary import SHOWN_ARMS

BUCKETS = ("minute", "hour", "day")
_SQLITE_BUCKET = {"minute": "%Y-%m-%d %H:%M:00", "hour": "%Y-%m-%d %H:00:00", "day": "%Y-%m-%d 00:00:00"}
PERCENTILES = (0.5, 0.95)


@dataclass(frozen=True)
class Scope:
    """Which events a number covers: all (admins), one region, or a set of events (an organizer's one)."""

    event_ids: tuple[int, ...] | None = None
    region: str | None = None
    since: dt.datetime | None = None  # votes and turns from this moment on (None: since the start)

    def label(self) -> str:
        if self.event_ids is not None:
            return f"{len(self.event_ids)} event(s)"
        return self.region.upper() if self.region else "all events"


@dataclass(frozen=True)
class ArmLatency:
    arm: str
    answers: int
    p50_ms: float | None
    p95_ms: float | None


@dataclass
class Overview:
    """The live overview's numbers for one scope."""

    participants: int = 0
    conversations: int = 0
    votes: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)  # winner_arm -> votes (on, off, tie, …)
    turns: int = 0
    handed_off: int = 0  # turns the policy handed off
    reached_cloud: int = 0  # … and the cloud answered (not blocked by budget, rate limit, error)
    blocked: dict[str, int] = field(default_factory=dict)  # blocked_by -> turns
    errors: dict[str, int] = field(default_factory=dict)  # "arm: error_kind" -> answers
    cloud_cost: Decimal = Decimal(0)
    cloud_budget: Decimal | None = None
    latency: list[ArmLatency] = field(default_factory=list)
    votes_over_time: list[tuple[dt.datetime, int]] = field(default_factory=list)
    top_tags: list[tuple[str, str, int]] = field(default_factory=list)  # (arm, tag, count)
    languages: list[tuple[str, int]] = field(default_factory=list)
    energy: EnergyUse = field(default_factory=lambda: EnergyUse())

    @property
    def on_wins(self) -> int:
        return self.verdicts.get("on", 0)

    @property
    def off_wins(self) -> int:
        return self.verdicts.get("off", 0)

    @property
    def decisive(self) -> int:
        """Votes that preferred one arm (the win rate's denominator)."""
        return self.on_wins + self.off_wins

    @property
    def on_win_rate(self) -> float | None:
        return self.on_wins / self.decisive if self.decisive else None

    @property
    def handoff_rate(self) -> float | None:
        return self.handed_off / self.turns if self.turns else None

    @property
    def budget_used(self) -> float | None:
        if not self.cloud_budget:
            return None
        return float(self.cloud_cost / self.cloud_budget)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _event_filter(column: ColumnElement[int], scope: Scope) -> list[ColumnElement[bool]]:
    """Conditions restricting an ``event_id`` column to the scope (none for all events)."""
    conditions: list[ColumnElement[bool]] = []
    if scope.event_ids is not None:
        conditions.append(column.in_(scope.event_ids))
    if scope.region is not None:
        conditions.append(column.in_(select(Event.id).where(Event.region == scope.region)))
    return conditions


def _visible_votes(scope: Scope) -> Select:
    """Votes in scope that count (``db.visibility``)."""
    query = counted_votes().where(*_event_filter(Vote.event_id, scope))
    if scope.since is not None:
        query = query.where(Vote.created_at >= scope.since)
    return query


def _turns_in_scope(query: Select, scope: Scope) -> Select:
    """Restrict a query that joins Turn to the conversations in scope that count."""
    query = query.join(Conversation, Conversation.id == Turn.conversation_id).where(
        conversation_counts(), *_event_filter(Conversation.event_id, scope)
    )
    if scope.since is not None:
        query = query.where(Turn.created_at >= scope.since)
    return query


def counts(session: Session, scope: Scope) -> tuple[int, int]:
    """Participants who joined and conversations started that count, in scope."""
    participants = session.scalar(
        select(func.count()).select_from(Participant).where(*_event_filter(Participant.event_id, scope))
    )
    conversations = (
        select(func.count())
        .select_from(Conversation)
        .where(conversation_counts(), *_event_filter(Conversation.event_id, scope))
    )
    if scope.since is not None:
        conversations = conversations.where(Conversation.created_at >= scope.since)
    return participants or 0, session.scalar(conversations) or 0


def verdicts(session: Session, scope: Scope) -> dict[str, int]:
    """Visible votes per verdict in arm terms (``on`` = handoff arm won)."""
    votes = _visible_votes(scope).with_only_columns(Vote.winner_arm, func.count()).group_by(Vote.winner_arm)
    return {arm: n for arm, n in session.execute(votes)}


def votes_over_time(session: Session, scope: Scope, bucket: str = "hour") -> list[tuple[dt.datetime, int]]:
    """Visible votes per time bucket (UTC), oldest first."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {BUCKETS}")
    if _dialect(session) == "postgresql":
        start = func.date_trunc(bucket, func.timezone("UTC", Vote.created_at))
    else:
        start = func.strftime(_SQLITE_BUCKET[bucket], Vote.created_at)
    query = _visible_votes(scope).with_only_columns(start.label("start"), func.count()).group_by(start).order_by(start)
    series = []
    for moment, n in session.execute(query):
        if isinstance(moment, str):
            moment = dt.datetime.fromisoformat(moment)
        series.append((moment.replace(tzinfo=dt.UTC), n))
    return series


def handoffs(session: Session, scope: Scope) -> tuple[int, int, int, dict[str, int]]:
    """Turns decided, handed off, answered by the cloud, and blocked hand-offs per reason."""
    reached = and_(HandoffDecision.handed_off, HandoffDecision.blocked_by.is_(None))
    totals = _turns_in_scope(
        select(
            func.count(),
            func.coalesce(func.sum(case((HandoffDecision.handed_off, 1), else_=0)), 0),
            func.coalesce(func.sum(case((reached, 1), else_=0)), 0),
        )
        .select_from(HandoffDecision)
        .join(Turn, Turn.id == HandoffDecision.turn_id),
        scope,
    )
    turns, handed_off, reached_cloud = session.execute(totals).one()
    blocked = _turns_in_scope(
        select(HandoffDecision.blocked_by, func.count())
        .select_from(HandoffDecision)
        .join(Turn, Turn.id == HandoffDecision.turn_id)
        .where(HandoffDecision.blocked_by.is_not(None))
        .group_by(HandoffDecision.blocked_by),
        scope,
    )
    return turns, int(handed_off), int(reached_cloud), {reason: n for reason, n in session.execute(blocked)}


def _answers(columns: list, scope: Scope) -> Select:
    return _turns_in_scope(select(*columns).select_from(Answer).join(Turn, Turn.id == Answer.turn_id), scope)


def errors(session: Session, scope: Scope) -> dict[str, int]:
    """Answers that failed, per arm and kind of error (cloud timeouts, rate limits, …)."""
    query = _answers([Answer.arm, Answer.error_kind, func.count()], scope).where(Answer.error_kind.is_not(None))
    rows = session.execute(query.group_by(Answer.arm, Answer.error_kind))
    return {f"{arm}: {kind}": n for arm, kind, n in rows}


def cloud_spend(session: Session, scope: Scope) -> tuple[Decimal, Decimal | None]:
    """The events' budget ledger (``cloud_spent``) and their summed budget, for the events in scope.

    The ledger, not the answers' costs: it also holds calls in flight, timed-out calls that may be
    billed and calls of turns nobody kept, which no answer row records. It is per event, so ``since``
    does not apply."""
    cost = session.scalar(select(func.coalesce(func.sum(Event.cloud_spent), 0)).where(*_event_filter(Event.id, scope)))
    budget = session.scalar(select(func.sum(Event.cloud_budget)).where(*_event_filter(Event.id, scope)))
    return Decimal(cost or 0), (Decimal(budget) if budget is not None else None)


def latency_percentiles(session: Session, scope: Scope) -> list[ArmLatency]:
    """p50 and p95 total latency of the shown answers per arm (nearest rank, same on both databases)."""
    shown = Answer.arm.in_(SHOWN_ARMS) & Answer.latency_ms.is_not(None)
    if _dialect(session) == "postgresql":
        columns = [func.percentile_disc(q).within_group(Answer.latency_ms) for q in PERCENTILES]
        query = _answers([Answer.arm, func.count(), *columns], scope).where(shown).group_by(Answer.arm)
        rows = {arm: (n, *values) for arm, n, *values in session.execute(query)}
    else:
        # SQLite has no percentile aggregate: rank the latency column once per arm, keep the wanted ranks.
        ranked = (
            _answers(
                [
                    Answer.arm,
                    Answer.latency_ms,
                    func.row_number().over(partition_by=Answer.arm, order_by=Answer.latency_ms).label("rank"),
                    func.count().over(partition_by=Answer.arm).label("n"),
                ],
                scope,
            )
            .where(shown)
            .subquery()
        )
        wanted = [
            func.max(case((ranked.c.rank == _nearest_rank(q, ranked.c.n), ranked.c.latency_ms))) for q in PERCENTILES
        ]
        query = select(ranked.c.arm, func.max(ranked.c.n), *wanted).group_by(ranked.c.arm)
        rows = {arm: (n, *values) for arm, n, *values in session.execute(query)}
    return [ArmLatency(arm, *rows.get(arm, (0, None, None))) for arm in SHOWN_ARMS]


def _nearest_rank(q: float, n: ColumnElement[int]) -> ColumnElement[int]:
    """ceil(q * n) in integer SQL arithmetic: the rank PostgreSQL's percentile_disc picks."""
    ratio = Fraction(q).limit_denominator(1000)
    return (n * ratio.numerator + ratio.denominator - 1) // ratio.denominator


def tag_elements(session: Session, column: ColumnElement) -> tuple:
    """A table-valued function yielding each element of a JSON list column, and a condition for lists."""
    if _dialect(session) == "postgresql":
        return func.json_array_elements_text(column).table_valued("value"), func.json_typeof(column) == "array"
    return func.json_each(column).table_valued("value"), func.json_type(column) == "array"


def top_tags(session: Session, scope: Scope, limit: int = 10) -> list[tuple[str, str, int]]:
    """The most used reason tags, per rated arm, over visible votes."""
    elements, is_list = tag_elements(session, Rating.tags)
    tag = elements.c.value
    query = (
        select(Rating.arm, tag, func.count().label("n"))
        .select_from(Rating)
        .join(elements, true())
        .where(is_list, Rating.vote_id.in_(_visible_votes(scope)))
        .group_by(Rating.arm, tag)
        .order_by(func.count().desc(), Rating.arm, tag)
        .limit(limit)
    )
    return [(arm, value, n) for arm, value, n in session.execute(query)]


def languages(session: Session, scope: Scope, limit: int = 10) -> list[tuple[str, int]]:
    """Prompt languages, most frequent first (``unknown`` when detection had no answer)."""
    language = func.coalesce(Turn.language, "unknown")
    query = _turns_in_scope(select(language, func.count()).select_from(Turn), scope)
    query = query.group_by(language).order_by(func.count().desc(), language).limit(limit)
    return [(lang, n) for lang, n in session.execute(query)]


@dataclass(frozen=True)
class EnergyUse:
    """Estimated energy and cloud cost of the two arms over the prompts that have estimates.

    The handoff arm's energy counts the local draft before a cloud answer (taken as the local
    answer's energy) plus the cloud answer; the local-only arm counts the local answer.
    """

    prompts: int = 0
    local_wh: float = 0.0
    handoff_wh: float = 0.0
    handoff_cost: Decimal = Decimal(0)

    def per_1000(self, value: float | Decimal) -> float | None:
        """A total expressed per 1,000 prompts, or None without prompts."""
        return float(value) * 1000 / self.prompts if self.prompts else None


def energy_query() -> Select:
    """Prompts with estimates and their summed energy (local arm, handoff arm) and handoff cloud cost.

    One rule for the overview and the report (each adds its own scope): the handoff arm counts the
    local draft before a cloud answer (taken as the local answer's energy) plus the cloud answer.
    """
    off, on = aliased(Answer), aliased(Answer)
    cloud = on.source == "cloud"
    return (
        select(
            func.count(),
            func.coalesce(func.sum(off.energy_wh), 0.0),
            func.coalesce(func.sum(on.energy_wh + case((cloud, off.energy_wh), else_=0.0)), 0.0),
            func.coalesce(func.sum(case((cloud, func.coalesce(on.cost, 0)), else_=0)), 0),
        )
        .select_from(Turn)
        .join(off, and_(off.turn_id == Turn.id, off.arm == "off"))
        .join(on, and_(on.turn_id == Turn.id, on.arm == "on"))
        .where(off.energy_wh.is_not(None), on.energy_wh.is_not(None))
    )


def energy_use(session: Session, scope: Scope) -> EnergyUse:
    """Summed energy estimates (feedback.energy) and cloud cost of the shown arms, one SQL aggregate."""
    prompts, local_wh, handoff_wh, cost = session.execute(_turns_in_scope(energy_query(), scope)).one()
    return EnergyUse(int(prompts), float(local_wh), float(handoff_wh), Decimal(cost or 0))


def overview(session: Session, scope: Scope, bucket: str = "hour") -> Overview:
    """Every number of the live overview for one scope: from the rollups, or from the rows for a ``since`` window."""
    if scope.since is not None:
        return overview_from_rows(session, scope, bucket)
    return overview_from_rollups(session, scope, bucket)


def overview_from_rows(session: Session, scope: Scope, bucket: str = "hour") -> Overview:
    """The overview computed from the rows themselves: the reference the rollups must equal."""
    participants, conversations = counts(session, scope)
    verdict_counts = verdicts(session, scope)
    turns, handed_off, reached_cloud, blocked = handoffs(session, scope)
    cost, budget = cloud_spend(session, scope)
    return Overview(
        participants=participants,
        conversations=conversations,
        votes=sum(verdict_counts.values()),
        verdicts=verdict_counts,
        turns=turns,
        handed_off=handed_off,
        reached_cloud=reached_cloud,
        blocked=blocked,
        errors=errors(session, scope),
        cloud_cost=cost,
        cloud_budget=budget,
        latency=latency_percentiles(session, scope),
        votes_over_time=votes_over_time(session, scope, bucket),
        top_tags=top_tags(session, scope),
        languages=languages(session, scope),
        energy=energy_use(session, scope),
    )


def _scope_event_ids(session: Session, scope: Scope) -> list[int] | None:
    """The scope's events as a list of ids (None: all events), so each rollup query is an index lookup."""
    if scope.event_ids is None and scope.region is None:
        return None
    return list(session.scalars(select(Event.id).where(*_event_filter(Event.id, scope)).order_by(Event.id)))


def _in(column: ColumnElement[int], ids: list[int] | None) -> list[ColumnElement[bool]]:
    return [] if ids is None else [column.in_(ids)]


def overview_from_rollups(session: Session, scope: Scope, bucket: str = "hour") -> Overview:
    """The overview from ``db.rollups``' tables (``since`` is not rolled up: see ``overview``)."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {BUCKETS}")
    rollups.write_pending(session)  # this transaction's own writes first
    ids = _scope_event_ids(session, scope)
    counters: dict[tuple[str, str, str], int] = {}
    query = (
        select(RollupCount.kind, RollupCount.arm, RollupCount.label, func.sum(RollupCount.n))
        .where(RollupCount.kind.not_in(("tag", "language", "latency")), *_in(RollupCount.event_id, ids))
        .group_by(RollupCount.kind, RollupCount.arm, RollupCount.label)
    )
    for kind, arm, label, n in session.execute(query):
        if n:
            counters[(kind, arm, label)] = int(n)

    def counter(kind: str) -> int:
        return counters.get((kind, "", ""), 0)

    verdict_counts = {
        arm: int(n)
        for arm, n in session.execute(
            select(RollupVote.winner_arm, func.sum(RollupVote.n))
            .where(*_in(RollupVote.event_id, ids))
            .group_by(RollupVote.winner_arm)
            .having(func.sum(RollupVote.n) > 0)
        )
    }
    cost, budget = cloud_spend(session, scope)
    return Overview(
        participants=counter("participants"),
        conversations=counter("conversations"),
        votes=sum(verdict_counts.values()),
        verdicts=verdict_counts,
        turns=counter("turns"),
        handed_off=counter("handed_off"),
        reached_cloud=counter("reached_cloud"),
        blocked={label: n for (kind, _, label), n in counters.items() if kind == "blocked"},
        errors={f"{arm}: {label}": n for (kind, arm, label), n in counters.items() if kind == "error"},
        cloud_cost=cost,
        cloud_budget=budget,
        latency=_rollup_latency(session, ids),
        votes_over_time=_rollup_votes_over_time(session, ids, bucket),
        top_tags=[
            (arm, tag, n) for arm, tag, n in _top_counts(session, ids, "tag", [RollupCount.arm, RollupCount.label])
        ],
        languages=[(label, n) for label, n in _top_counts(session, ids, "language", [RollupCount.label])],
        energy=_rollup_energy(session, ids),
    )


def _top_counts(session: Session, ids: list[int] | None, kind: str, columns: list, limit: int = 10) -> list[tuple]:
    """The most frequent labels of one kind, ordered as the row queries order them (count, then name)."""
    total = func.sum(RollupCount.n)
    query = (
        select(*columns, total)
        .where(RollupCount.kind == kind, *_in(RollupCount.event_id, ids))
        .group_by(*columns)
        .having(total > 0)
        .order_by(total.desc(), *columns)
        .limit(limit)
    )
    return [(*values, int(n)) for *values, n in session.execute(query)]


def _rollup_votes_over_time(session: Session, ids: list[int] | None, bucket: str) -> list[tuple[dt.datetime, int]]:
    if bucket == "minute":
        start = RollupVote.minute
    elif bucket == "hour":
        start = func.substr(RollupVote.minute, 1, 13, type_=String) + ":00:00"
    else:
        start = func.substr(RollupVote.minute, 1, 10, type_=String) + " 00:00:00"
    total = func.sum(RollupVote.n)
    query = (
        select(start.label("start"), total)
        .where(*_in(RollupVote.event_id, ids))
        .group_by(start)
        .having(total > 0)
        .order_by(start)
    )
    return [(dt.datetime.fromisoformat(moment).replace(tzinfo=dt.UTC), int(n)) for moment, n in session.execute(query)]


def _rollup_energy(session: Session, ids: list[int] | None) -> EnergyUse:
    prompts, local_wh, handoff_wh, cost = session.execute(
        select(
            func.coalesce(func.sum(RollupEnergy.prompts), 0),
            func.coalesce(func.sum(RollupEnergy.local_wh), 0.0),
            func.coalesce(func.sum(RollupEnergy.handoff_wh), 0.0),
            func.coalesce(func.sum(RollupEnergy.handoff_cost), 0),
        ).where(*_in(RollupEnergy.event_id, ids))
    ).one()
    return EnergyUse(int(prompts), float(local_wh), float(handoff_wh), Decimal(cost or 0))


def _rollup_latency(session: Session, ids: list[int] | None) -> list[ArmLatency]:
    """Exact nearest-rank p50 / p95 per arm (``percentile_disc``'s and the row query's rank, ceil(q * n)).

    Percentiles cannot be summed, so: add up the arm's 10 ms bucket counts in order to find the bucket
    holding the wanted rank, then read that rank within the bucket from ``RollupLatency`` in index order
    (a few thousand rows at most, never the whole arm)."""
    dialect = _dialect(session)
    out = []
    for arm in SHOWN_ARMS:
        buckets = sorted(
            (int(label), int(n))
            for label, n in session.execute(
                select(RollupCount.label, func.sum(RollupCount.n))
                .where(RollupCount.kind == "latency", RollupCount.arm == arm, *_in(RollupCount.event_id, ids))
                .group_by(RollupCount.label)
            )
            if n
        )
        total = sum(n for _, n in buckets)
        values: list[float | None] = []
        for q in PERCENTILES:
            if not total:
                values.append(None)
                continue
            ratio = Fraction(q).limit_denominator(1000)
            rank = (total * ratio.numerator + ratio.denominator - 1) // ratio.denominator
            before, index = 0, 0
            while before + buckets[index][1] < rank:
                before += buckets[index][1]
                index += 1
            bucket = buckets[index][0]
            low, high = bucket * rollups.LATENCY_BUCKET_MS, (bucket + 1) * rollups.LATENCY_BUCKET_MS
            values.append(
                session.scalar(
                    select(RollupLatency.latency_ms)
                    .where(
                        RollupLatency.arm == arm,
                        *_in(RollupLatency.event_id, ids),
                        # the index range, a little wider than the bucket; the bucket itself by its own rule
                        RollupLatency.latency_ms >= low - 1,
                        RollupLatency.latency_ms < high + 1,
                        rollups.latency_bucket_sql(RollupLatency.latency_ms, dialect) == bucket,
                    )
                    .order_by(RollupLatency.latency_ms)
                    .offset(rank - before - 1)
                    .limit(1)
                )
            )
        out.append(ArmLatency(arm, total, *values))
    return out


def compare_regions(session: Session, since: dt.datetime | None = None, bucket: str = "hour") -> dict[str, Overview]:
    """The same overview for SF, Europe and APAC, side by side."""
    return {region: overview(session, Scope(region=region, since=since), bucket) for region in REGIONS}
