"""Per-vote rows for the research analyses (style control, latency, vote quality, judges).

The visible-conversation selection comes in as a subquery from the caller (one rule for which votes
count), so this module only joins what one vote saw: both arms' answers with timing and style.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Subquery, and_, func, select
from sqlalchemy.orm import aliased

from db.models import Answer, Conversation, Event, HandoffDecision, JudgeVerdict, Turn, Vote

VOTE_COLUMNS = (
    "vote_id",
    "participant_id",
    "event",
    "region",
    "language",
    "category",
    "prompt",
    "winner",
    "winner_arm",
    "handoff_side",
    "handed_off",
    "policy",
    "threshold",
    "model_off",
    "time_to_vote_ms",
    "display",
    "created_at",
    "on_tokens",
    "on_ttft_ms",
    "on_latency_ms",
    "on_style",
    "on_reveals",
    "off_tokens",
    "off_ttft_ms",
    "off_latency_ms",
    "off_style",
    "off_reveals",
)


def vote_rows(
    connection: Connection, visible: Subquery, chunk: int = 20_000, columns: Sequence[str] = VOTE_COLUMNS
) -> pd.DataFrame:
    """One row per visible vote with both shown answers' timing, style and origin flag.

    ``columns`` (a subset of ``VOTE_COLUMNS``) reads only those: the exports' vote flags need neither
    the style features (JSON decoded per row) nor the labels, and a million votes make that count."""
    unknown = set(columns) - set(VOTE_COLUMNS)
    if unknown:
        raise ValueError(f"not vote columns: {sorted(unknown)}")
    on, off = aliased(Answer), aliased(Answer)
    every = dict(
        zip(
            VOTE_COLUMNS,
            (
                Vote.id,
                Vote.participant_id,
                Event.code,
                Event.region,
                func.coalesce(Turn.language, "unknown"),
                func.coalesce(Turn.category, Conversation.category, "unknown"),
                Turn.prompt,
                Vote.winner,
                Vote.winner_arm,
                Conversation.handoff_side,
                HandoffDecision.handed_off,
                HandoffDecision.policy,
                HandoffDecision.threshold,
                off.model,
                Vote.time_to_vote_ms,
                Vote.display,
                Vote.created_at,
                on.tokens_out,
                on.ttft_ms,
                on.latency_ms,
                on.style,
                on.reveals_origin,
                off.tokens_out,
                off.ttft_ms,
                off.latency_ms,
                off.style,
                off.reveals_origin,
            ),
            strict=True,
        )
    )
    stmt = (
        select(*(every[name] for name in columns))
        .join(visible, visible.c.id == Vote.conversation_id)
        .join(Conversation, Conversation.id == Vote.conversation_id)
        .join(Event, Event.id == Conversation.event_id)
        .join(Turn, Turn.id == Vote.turn_id)
        .outerjoin(HandoffDecision, HandoffDecision.turn_id == Turn.id)
        .outerjoin(on, and_(on.turn_id == Turn.id, on.arm == "on"))
        .outerjoin(off, and_(off.turn_id == Turn.id, off.arm == "off"))
        .where(Vote.hidden_at.is_(None))
        .order_by(Vote.id)
    )
    texts: dict[str, str] = {}  # one object per distinct prompt: prompts repeat across votes
    parts = []
    for rows in _chunks(connection.execution_options(stream_results=True).execute(stmt), chunk):
        part = pd.DataFrame(rows, columns=list(columns))
        if "prompt" in part:
            part["prompt"] = [texts.setdefault(text, text) for text in part["prompt"]]
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(columns))
    if "handed_off" in frame:
        frame["handed_off"] = frame["handed_off"].fillna(False).astype(bool)
    return frame


def _chunks(result: Any, size: int) -> Iterator[list]:
    for rows in result.partitions(size):
        yield [tuple(row) for row in rows]


def judge_rows(connection: Connection, visible: Subquery) -> pd.DataFrame:
    """Every judge verdict on a visible vote (both orders), with its cost and tokens."""
    stmt = (
        select(
            JudgeVerdict.vote_id,
            JudgeVerdict.model,
            JudgeVerdict.order,
            JudgeVerdict.winner_arm,
            JudgeVerdict.tokens_in,
            JudgeVerdict.tokens_out,
            JudgeVerdict.cost,
        )
        .join(Vote, Vote.id == JudgeVerdict.vote_id)
        .join(visible, visible.c.id == Vote.conversation_id)
        .where(Vote.hidden_at.is_(None))
    )
    return pd.DataFrame(
        connection.execute(stmt).all(),
        columns=["vote_id", "model", "order", "judge_arm", "tokens_in", "tokens_out", "cost"],
    )
