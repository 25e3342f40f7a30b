"""The queries behind the improvement report (``feedback.report``), each one SQL statement.

Every function takes ``conversations``: a select of the conversation ids the report covers, built
from ``db.visibility.counted_conversations`` with the report's filters; votes are further held to
``vote_not_hidden``. Counts are GROUP BY aggregates, so the report reads a handful of small tables
whatever the size of the database; only latencies and bounded samples come back row by row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, Select, Text, and_, case, cast, func, select
from sqlalchemy.orm import aliased

from db.analytics import energy_query
from db.models import Answer, HandoffDecision, Rating, Turn, Vote
from db.visibility import vote_not_hidden
from db.vocabulary import DECIDED


def handoff_totals(connection: Connection, conversations: Select) -> tuple[int, int, float]:
    """Turns decided, turns handed off, and the cloud cost of the shown handoff answers."""
    visible = conversations.subquery()
    on = aliased(Answer)
    turns, handed, cost = connection.execute(
        select(
            func.count(),
            func.sum(case((HandoffDecision.handed_off, 1), else_=0)),
            func.sum(case((on.source == "cloud", on.cost), else_=0)),
        )
        .select_from(HandoffDecision)
        .join(Turn, Turn.id == HandoffDecision.turn_id)
        .join(visible, visible.c.id == Turn.conversation_id)
        .outerjoin(on, and_(on.turn_id == Turn.id, on.arm == "on"))
    ).one()
    return int(turns or 0), int(handed or 0), float(cost or 0)


def added_latencies(connection: Connection, conversations: Select) -> Iterator[float]:
    """Per handed-off turn: how much longer the handoff answer took than the local one (ms), streamed."""
    visible = conversations.subquery()
    on, off = aliased(Answer), aliased(Answer)
    rows = connection.execution_options(stream_results=True, yield_per=10_000).execute(
        select(on.latency_ms, off.latency_ms)
        .select_from(HandoffDecision)
        .join(Turn, Turn.id == HandoffDecision.turn_id)
        .join(visible, visible.c.id == Turn.conversation_id)
        .join(on, and_(on.turn_id == Turn.id, on.arm == "on"))
        .join(off, and_(off.turn_id == Turn.id, off.arm == "off"))
        .where(HandoffDecision.handed_off, on.latency_ms.is_not(None), off.latency_ms.is_not(None))
    )
    return (on_ms - off_ms for on_ms, off_ms in rows)


def _on_counted_votes(columns: Sequence[Any], conversations: Select, via: ColumnElement[bool] | None = None) -> Select:
    """``columns`` of the votes that count, reached from the columns' table ``via`` a join (None: votes' own)."""
    visible = conversations.subquery()
    stmt = select(*columns)
    if via is not None:
        stmt = stmt.join(Vote, via)
    return stmt.join(visible, visible.c.id == Vote.conversation_id).where(vote_not_hidden())


def _rated(columns: Sequence[Any], conversations: Select) -> Select:
    """Ratings of the votes that count, with ``columns``."""
    return _on_counted_votes(columns, conversations, Vote.id == Rating.vote_id)


def energy_totals(connection: Connection, conversations: Select) -> Row[Any]:
    """(prompts with estimates, local-arm Wh, handoff-arm Wh, handoff cloud cost): ``db.analytics``' rule."""
    visible = conversations.subquery()
    return connection.execute(energy_query().join(visible, visible.c.id == Turn.conversation_id)).one()


def rating_groups(connection: Connection, conversations: Select) -> list[Row[Any]]:
    """(arm, stars, stored tag list as JSON text, ratings, first rating id) per distinct (arm, stars, tag list):
    one pass over the ratings for both ``star_counts`` and ``tag_lists`` (a few thousand rows at most)."""
    tag_list = cast(Rating.tags, Text)
    stmt = _rated([Rating.arm, Rating.stars, tag_list, func.count(), func.min(Rating.id)], conversations)
    return list(connection.execute(stmt.group_by(Rating.arm, Rating.stars, tag_list)))


def star_counts(groups: Sequence[Row[Any]]) -> list[tuple[str, int, int]]:
    """(arm, stars, ratings) for every star value given, in (arm, stars) order, from ``rating_groups``."""
    counts: Counter[tuple[str, int]] = Counter()
    for arm, stars, _, n, _ in groups:
        if stars is not None:
            counts[arm, stars] += n
    return [(arm, stars, n) for (arm, stars), n in sorted(counts.items())]


def tag_lists(groups: Sequence[Row[Any]]) -> list[tuple[str, str, int]]:
    """(arm, stored tag list as JSON text, ratings) per distinct list, in order of first appearance, from
    ``rating_groups``: counted per distinct stored list (a few hundred rows, not one per rating); the order
    breaks ties the way counting every rating in turn would."""
    counts: Counter[tuple[str, str]] = Counter()
    first: dict[tuple[str, str], int] = {}
    for arm, _, tags, n, first_id in groups:
        if tags is not None:
            counts[arm, tags] += n
            first[arm, tags] = min(first.get((arm, tags), first_id), first_id)
    return [(arm, tags, counts[arm, tags]) for arm, tags in sorted(counts, key=first.__getitem__)]


def _voted_turns(columns: Sequence[Any], conversations: Select) -> Select:
    """Turns with the votes on them that count, with ``columns``."""
    return _on_counted_votes(columns, conversations, Vote.turn_id == Turn.id)


def decided_prompts(connection: Connection, conversations: Select, limit: int) -> list[Row[Any]]:
    """(prompt, winner_arm, language) of the latest ``limit`` votes that preferred an arm."""
    stmt = _voted_turns([Turn.prompt, Vote.winner_arm, Turn.language], conversations).where(
        Vote.winner_arm.in_(DECIDED)
    )
    return list(connection.execute(stmt.order_by(Vote.id.desc()).limit(limit)))


def worst_rated(connection: Connection, conversations: Select, arm: str, limit: int) -> list[Row[Any]]:
    """(stars, prompt, answer text, category) of ``arm``'s lowest-rated answers, latest first among equals."""
    answer = aliased(Answer)
    stmt = (
        _rated([Rating.stars, Turn.prompt, answer.text, Turn.category], conversations)
        .join(Turn, Turn.id == Vote.turn_id)
        # ``|| ''`` keeps SQLite (without ANALYZE statistics) from driving the join from the arm index:
        # that plan probes every visible conversation per answer, minutes at 10,000 votes, milliseconds this way
        .join(answer, and_(answer.turn_id == Turn.id, answer.arm.concat("") == arm))
        .where(Rating.arm == arm, Rating.stars.is_not(None))
        .order_by(Rating.stars, Vote.id.desc())
        .limit(limit)
    )
    return list(connection.execute(stmt))


def latest_comments(connection: Connection, conversations: Select, limit: int) -> list[str]:
    """The latest ``limit`` comments on votes that count."""
    stmt = (
        _on_counted_votes([Vote.comment], conversations)
        .where(Vote.comment.is_not(None))
        .order_by(Vote.id.desc())
        .limit(limit)
    )
    return [comment for (comment,) in connection.execute(stmt)]
