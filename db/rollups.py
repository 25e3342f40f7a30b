"""Incremental rollups behind the organizer overview, kept in the same transaction as each write.

Summing 1,000,000 votes on every refresh took seconds; the overview instead reads small per-event
tables (``RollupCount``, ``RollupVote``, ``RollupEnergy``) and the narrow ``RollupLatency`` index.

How they stay exact:
- Every write that changes what counts computes what the touched rows contribute before and after
  (``Delta``, from the rows themselves, with ``db.visibility``'s rule) and adds the difference with
  one atomic upsert per table (``INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n``): two writers
  bumping the same row both land, and keys go in sorted order, so two transactions never wait on
  each other's rows in opposite orders.
- Percentiles cannot be summed: ``RollupLatency`` keeps one row per counted shown answer, and
  ``RollupCount`` (kind ``latency``) counts them per 10 ms bucket. The overview finds the bucket that
  holds the nearest rank from the counts and reads the exact value inside that bucket by index order. Distinct counts are not needed: every
  counted row belongs to one event (a participant, a conversation), so per-event counts add up.
- Bulk writers (demo data, ``handoff merge``) and the migration that added the tables call
  ``rebuild``, which recomputes the events' rollups from the rows in one set-based pass.

A ``since`` window is not rolled up (it has no use on the pages); ``db.analytics`` answers it from
the rows.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    String,
    and_,
    bindparam,
    case,
    delete,
    event,
    func,
    insert,
    literal,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import Select

from db.models import (
    Answer,
    Conversation,
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
from db.session import begin_write, connection_of
from db.visibility import conversation_counts, vote_counts
from db.vocabulary import SHOWN_ARMS

Database = Session | Connection


def _dialect(db: Database) -> str:
    bind = db.get_bind() if isinstance(db, Session) else db
    return bind.dialect.name


def minute_of(moment: dt.datetime) -> str:
    """The UTC minute a vote is bucketed in, as ``RollupVote.minute`` spells it."""
    if moment.tzinfo is not None:  # SQLite hands back naive UTC
        moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:00")


LATENCY_BUCKET_MS = 10


def latency_bucket(latency_ms: float) -> int:
    """The 10 ms bucket a latency is counted in, computed as the SQL of ``latency_bucket_sql`` does
    (one IEEE division, truncated), so a bucket's count and the rows read for it always agree."""
    return int(latency_ms / LATENCY_BUCKET_MS)


def latency_bucket_sql(column, dialect: str):  # noqa: ANN001, ANN201 - SQL expressions
    if dialect == "postgresql":
        return func.cast(func.trunc(column / LATENCY_BUCKET_MS), BigInteger)
    return func.cast(column / LATENCY_BUCKET_MS, Integer)


@dataclass
class Delta:
    """What some rows add to (or, negated, take from) the rollups."""

    counts: Counter = field(default_factory=Counter)  # (event_id, kind, arm, label) -> n
    votes: Counter = field(default_factory=Counter)  # (event_id, minute, winner_arm) -> n
    energy: dict[int, list] = field(default_factory=dict)  # event_id -> [prompts, local_wh, handoff_wh, cost]
    latency: Counter = field(default_factory=Counter)  # (answer_id, event_id, arm, latency_ms) -> +1 / -1

    def add(self, other: Delta, sign: int = 1) -> Delta:
        for key, n in other.counts.items():
            self.counts[key] += sign * n
        for key, n in other.votes.items():
            self.votes[key] += sign * n
        for key, n in other.latency.items():
            self.latency[key] += sign * n
        for event_id, values in other.energy.items():
            mine = self.energy.setdefault(event_id, [0, 0.0, 0.0, Decimal(0)])
            for i, value in enumerate(values):
                mine[i] += sign * value
        return self

    def minus(self, other: Delta) -> Delta:
        return self.add(other, -1)


def count_delta(event_id: int, kind: str, arm: str = "", label: str = "", n: int = 1) -> Delta:
    delta = Delta()
    delta.counts[(event_id, kind, arm, label)] = n
    return delta


def conversation_counts_now(conversation: Conversation) -> bool:
    """``db.visibility.conversation_counts`` for a loaded row (``consented_at`` is never empty: consent
    comes before a participant exists)."""
    return conversation.hidden_at is None


_LOCKING: dict[Select, Select] = {}  # query -> its PostgreSQL locking form, built once per query


def conversation_locked(db: Database, query: Select) -> Select:
    """``query`` (one conversation's row, with whatever it joins) as the conversation's write lock reads it.

    Votes, turns and hides of one conversation take this lock before reading what they add to the
    rollups, so each reads the others' committed rows (a hide never misses a vote being saved, a vote
    never misses a hide). PostgreSQL: the same statement, ``FOR UPDATE OF conversations`` (the row's
    lock and its fresh values in one round trip). SQLite: the transaction becomes a writer now
    (``db.session.begin_write``: ``BEGIN IMMEDIATE``, or the write lock a write already took), and the
    query, unchanged, reads under it. Pass a query built once: its locking form is kept per query, so
    the statement cache hits on every call."""
    if _dialect(db) != "postgresql":
        begin_write(db)
        return query
    locking = _LOCKING.get(query)
    if locking is None:
        locking = _LOCKING[query] = query.with_for_update(of=Conversation.__table__)
    return locking


_CONVERSATION = (
    select(Conversation)
    .where(Conversation.id == bindparam("conversation_id"))
    .execution_options(populate_existing=True)
)


def lock_conversation(session: Session, conversation_id: int) -> Conversation | None:
    """Take the conversation's write lock (``conversation_locked``), then return it as committed now
    (None if there is none)."""
    query = conversation_locked(session, _CONVERSATION)
    return session.scalars(query, {"conversation_id": conversation_id}).one_or_none()


def turn_delta(conversation: Conversation, turn: Turn) -> Delta:
    """A stored turn's part: its decision, language, failed answers, energy and shown latencies."""
    delta = Delta()
    if not conversation_counts_now(conversation):
        return delta
    event_id = conversation.event_id
    decision = turn.decision
    if decision is not None:
        delta.counts[(event_id, "turns", "", "")] += 1
        if decision.handed_off:
            delta.counts[(event_id, "handed_off", "", "")] += 1
            if decision.blocked_by is None:
                delta.counts[(event_id, "reached_cloud", "", "")] += 1
        if decision.blocked_by is not None:
            delta.counts[(event_id, "blocked", "", decision.blocked_by)] += 1
    delta.counts[(event_id, "language", "", turn.language if turn.language is not None else "unknown")] += 1
    arms = {}
    for answer in turn.answers:
        arms[answer.arm] = answer
        if answer.error_kind is not None:
            delta.counts[(event_id, "error", answer.arm, answer.error_kind)] += 1
        if answer.arm in SHOWN_ARMS and answer.latency_ms is not None:
            delta.latency[(answer.id, event_id, answer.arm, answer.latency_ms)] += 1
            delta.counts[(event_id, "latency", answer.arm, str(latency_bucket(answer.latency_ms)))] += 1
    off, on = arms.get("off"), arms.get("on")
    if off is not None and on is not None and off.energy_wh is not None and on.energy_wh is not None:
        cloud = on.source == "cloud"
        cost = Decimal(on.cost or 0) if cloud else Decimal(0)
        delta.energy[event_id] = [1, off.energy_wh, on.energy_wh + (off.energy_wh if cloud else 0.0), cost]
    return delta


def vote_counts_now(vote_hidden_at: dt.datetime | None, conversation_hidden_at: dt.datetime | None) -> bool:
    """``db.visibility.vote_counts`` for values already read (as ``conversation_counts_now``)."""
    return vote_hidden_at is None and conversation_hidden_at is None


def verdict_delta(
    event_id: int, created_at: dt.datetime, winner_arm: str | None, ratings: Iterable[tuple[str, object]]
) -> Delta:
    """What a counted vote adds: its verdict in its minute and its ratings' (arm, tags) reason tags."""
    delta = Delta()
    if winner_arm is None:
        return delta
    delta.votes[(event_id, minute_of(created_at), winner_arm)] += 1
    for arm, tags in ratings:
        if isinstance(tags, list):
            for tag in tags:
                delta.counts[(event_id, "tag", arm, str(tag))] += 1
    return delta


def vote_delta(vote: Vote, conversation: Conversation) -> Delta:
    """A vote's part, as it is now: its verdict in its minute and its ratings' reason tags."""
    if not vote_counts_now(vote.hidden_at, conversation.hidden_at):
        return Delta()
    return verdict_delta(vote.event_id, vote.created_at, vote.winner_arm, ((r.arm, r.tags) for r in vote.ratings))


def conversation_delta(conversation: Conversation) -> Delta:
    """Everything a conversation adds while it counts (hiding takes all of it out, unhiding puts it back)."""
    delta = Delta()
    if not conversation_counts_now(conversation):
        return delta
    delta.counts[(conversation.event_id, "conversations", "", "")] += 1
    for turn in conversation.turns:
        delta.add(turn_delta(conversation, turn))
    for vote in conversation.votes:
        delta.add(vote_delta(vote, conversation))
    return delta


_UPSERTS: dict[tuple[str, str], object] = {}


def _upsert(db: Database, table, keys: list[str], rows: list[dict], sums: list[str]) -> None:  # noqa: ANN001
    if not rows:
        return
    dialect = _dialect(db)
    statement = _UPSERTS.get((dialect, table.name))
    if statement is None:  # built once per dialect and table: the vote path runs it on every vote
        insert_ = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
        statement = _UPSERTS[(dialect, table.name)] = insert_.on_conflict_do_update(
            index_elements=keys, set_={name: table.c[name] + insert_.excluded[name] for name in sums}
        )
    connection = connection_of(db)
    connection.execute(statement, rows[0] if len(rows) == 1 else rows)


def apply(db: Database, delta: Delta) -> None:
    """Add ``delta`` to the rollups in the caller's transaction.

    On a Session the deltas of the whole transaction are summed and written just before COMMIT
    (``write_pending``), in one fixed order (table, then key): every transaction takes the rollup rows'
    locks in the same order, so two never wait on each other (no deadlock), and a hot row (one event's
    verdict this minute) is locked only for the commit itself. A rollback drops them with the rows."""
    if isinstance(db, Session):
        db.info.setdefault(_PENDING, Delta()).add(delta)
    else:
        _write(db, delta)


_PENDING = "rollups.pending"


def write_pending(session: Session) -> None:
    """Write this transaction's deltas now (before COMMIT, or before the transaction reads the rollups)."""
    delta = session.info.pop(_PENDING, None)
    if delta is not None:
        _write(session, delta)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    write_pending(session)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _write(db: Database, delta: Delta) -> None:
    """The upserts: atomic increments (``n = n + excluded.n``), keys in sorted order."""
    counts = [
        {"event_id": e, "kind": k, "arm": a, "label": label, "n": n}
        for (e, k, a, label), n in sorted(delta.counts.items())
        if n
    ]
    _upsert(db, RollupCount.__table__, ["event_id", "kind", "arm", "label"], counts, ["n"])
    votes = [{"event_id": e, "minute": m, "winner_arm": a, "n": n} for (e, m, a), n in sorted(delta.votes.items()) if n]
    _upsert(db, RollupVote.__table__, ["event_id", "minute", "winner_arm"], votes, ["n"])
    energy = [
        {"event_id": e, "prompts": p, "local_wh": lw, "handoff_wh": hw, "handoff_cost": c}
        for e, (p, lw, hw, c) in sorted(delta.energy.items())
        if p or lw or hw or c
    ]
    _upsert(db, RollupEnergy.__table__, ["event_id"], energy, ["prompts", "local_wh", "handoff_wh", "handoff_cost"])
    gone = sorted(answer_id for (answer_id, *_), n in delta.latency.items() if n < 0)
    connection = connection_of(db)
    if gone:
        connection.execute(delete(RollupLatency).where(RollupLatency.answer_id.in_(gone)))
    added = [
        {"answer_id": a, "event_id": e, "arm": arm, "latency_ms": ms}
        for (a, e, arm, ms), n in sorted(delta.latency.items())
        if n > 0
    ]
    if added:
        connection.execute(insert(RollupLatency), added)


def _minute_expression(db: Database):  # noqa: ANN202 - a SQL expression
    if _dialect(db) == "postgresql":
        return func.to_char(func.timezone("UTC", Vote.created_at), "YYYY-MM-DD HH24:MI:00")
    return func.strftime("%Y-%m-%d %H:%M:00", Vote.created_at)


def _tag_elements(db: Database) -> tuple:
    if _dialect(db) == "postgresql":
        return func.json_array_elements_text(Rating.tags).table_valued("value"), func.json_typeof(
            Rating.tags
        ) == "array"
    return func.json_each(Rating.tags).table_valued("value"), func.json_type(Rating.tags) == "array"


def latency_buckets(db: Database, counted) -> Select:  # noqa: ANN001 - a SQL condition
    """Counted shown answers per event, arm and 10 ms latency bucket (``RollupCount`` kind ``latency``):
    the percentile's rank is found in these counts, then read from the one bucket's rows."""
    bucket = func.cast(latency_bucket_sql(Answer.latency_ms, _dialect(db)), String)
    return (
        select(Conversation.event_id, literal("latency"), Answer.arm, bucket, func.count())
        .select_from(Answer)
        .join(Turn, Turn.id == Answer.turn_id)
        .join(Conversation, Conversation.id == Turn.conversation_id)
        .where(counted, Answer.arm.in_(SHOWN_ARMS), Answer.latency_ms.is_not(None))
        .group_by(Conversation.event_id, Answer.arm, bucket)
    )


def rebuild(db: Database, event_ids: Iterable[int] | None = None) -> None:
    """Recompute the rollups of these events (all when None) from their rows, set-based.

    For bulk writers that bypass the per-row hooks (demo data, merge) and for the migration's backfill.
    """
    ids = None if event_ids is None else sorted(set(event_ids))
    if ids == []:
        return

    def scoped(column):  # noqa: ANN001, ANN202
        return [] if ids is None else [column.in_(ids)]

    if _dialect(db) == "postgresql":
        # Rows bulk-loaded in this transaction have no planner statistics yet (autovacuum only sees
        # committed rows): planned as near-empty tables, the tag rollup of the 1,000,000-vote demo data
        # nested loops over every rating and ran 16 min without finishing. ANALYZE samples the source
        # tables (own uncommitted rows included) in seconds, so the joins below are planned as hashes.
        for source in (Participant, Conversation, Turn, Answer, HandoffDecision, Vote, Rating):
            db.execute(text(f"ANALYZE {source.__tablename__}"))

    for table in (RollupCount, RollupVote, RollupEnergy, RollupLatency):
        db.execute(delete(table).where(*scoped(table.event_id)))

    counted = and_(conversation_counts(), *scoped(Conversation.event_id))
    count_columns = ["event_id", "kind", "arm", "label", "n"]
    event = Conversation.event_id
    selects = [
        select(Participant.event_id, literal("participants"), literal(""), literal(""), func.count())
        .where(*scoped(Participant.event_id))
        .group_by(Participant.event_id),
        select(event, literal("conversations"), literal(""), literal(""), func.count()).where(counted).group_by(event),
    ]
    decisions = (
        select(HandoffDecision)
        .join(Turn, Turn.id == HandoffDecision.turn_id)
        .join(Conversation, Conversation.id == Turn.conversation_id)
        .where(counted)
    )
    for kind, condition in (
        ("turns", None),
        ("handed_off", HandoffDecision.handed_off),
        ("reached_cloud", and_(HandoffDecision.handed_off, HandoffDecision.blocked_by.is_(None))),
    ):
        query = decisions.with_only_columns(event, literal(kind), literal(""), literal(""), func.count())
        selects.append((query.where(condition) if condition is not None else query).group_by(event))
    selects.append(
        decisions.with_only_columns(event, literal("blocked"), literal(""), HandoffDecision.blocked_by, func.count())
        .where(HandoffDecision.blocked_by.is_not(None))
        .group_by(event, HandoffDecision.blocked_by)
    )
    language = func.coalesce(Turn.language, "unknown")
    selects.append(
        select(event, literal("language"), literal(""), language, func.count())
        .select_from(Turn)
        .join(Conversation, Conversation.id == Turn.conversation_id)
        .where(counted)
        .group_by(event, language)
    )
    selects.append(
        select(event, literal("error"), Answer.arm, Answer.error_kind, func.count())
        .select_from(Answer)
        .join(Turn, Turn.id == Answer.turn_id)
        .join(Conversation, Conversation.id == Turn.conversation_id)
        .where(counted, Answer.error_kind.is_not(None))
        .group_by(event, Answer.arm, Answer.error_kind)
    )
    elements, is_list = _tag_elements(db)
    counted_votes = and_(vote_counts(), *scoped(Conversation.event_id))
    selects.append(
        select(Vote.event_id, literal("tag"), Rating.arm, elements.c.value, func.count())
        .select_from(Rating)
        .join(elements, true())
        .join(Vote, Vote.id == Rating.vote_id)
        .join(Conversation, Conversation.id == Vote.conversation_id)
        .where(is_list, counted_votes)
        .group_by(Vote.event_id, Rating.arm, elements.c.value)
    )
    selects.append(latency_buckets(db, counted))
    for query in selects:
        db.execute(insert(RollupCount).from_select(count_columns, query))

    minute = _minute_expression(db)
    db.execute(
        insert(RollupVote).from_select(
            ["event_id", "minute", "winner_arm", "n"],
            select(Vote.event_id, minute, Vote.winner_arm, func.count())
            .join(Conversation, Conversation.id == Vote.conversation_id)
            .where(counted_votes)
            .group_by(Vote.event_id, minute, Vote.winner_arm),
        )
    )
    off, on = aliased(Answer), aliased(Answer)
    cloud = on.source == "cloud"
    db.execute(
        insert(RollupEnergy).from_select(
            ["event_id", "prompts", "local_wh", "handoff_wh", "handoff_cost"],
            select(
                event,
                func.count(),
                func.coalesce(func.sum(off.energy_wh), 0.0),
                func.coalesce(func.sum(on.energy_wh + case((cloud, off.energy_wh), else_=0.0)), 0.0),
                func.coalesce(func.sum(case((cloud, func.coalesce(on.cost, 0)), else_=0)), 0),
            )
            .select_from(Turn)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .join(off, and_(off.turn_id == Turn.id, off.arm == "off"))
            .join(on, and_(on.turn_id == Turn.id, on.arm == "on"))
            .where(counted, off.energy_wh.is_not(None), on.energy_wh.is_not(None))
            .group_by(event),
        )
    )
    db.execute(
        insert(RollupLatency).from_select(
            ["answer_id", "event_id", "arm", "latency_ms"],
            select(Answer.id, event, Answer.arm, Answer.latency_ms)
            .select_from(Answer)
            .join(Turn, Turn.id == Answer.turn_id)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .where(counted, Answer.arm.in_(SHOWN_ARMS), Answer.latency_ms.is_not(None)),
        )
    )
