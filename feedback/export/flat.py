"""One flat row per vote, shared by the CSV and Parquet formats (same columns, same meanings)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from feedback.export.dataset import ConversationRow

# column -> (meaning, pyarrow type name); the data card and the Parquet schema both read this
COLUMNS: dict[str, tuple[str, str]] = {
    "vote_id": ("vote id (stable within the database)", "int64"),
    "conversation_id": ("conversation id", "int64"),
    "turn_index": ("0-based turn the vote was cast after", "int32"),
    "event": ("event code", "string"),
    "region": ("sf, europe or apac", "string"),
    "participant": ("participant id re-hashed with this export's salt", "string"),
    "language": ("detected prompt language (ISO 639-1)", "string"),
    "category": ("prompt category when known", "string"),
    "handoff_side": ("pane (a = left, b = right) that showed the handoff-on arm", "string"),
    "winner": ("verdict in pane terms: a, b, tie, both_bad, identical", "string"),
    "winner_arm": ("verdict in arm terms: on, off, tie, both_bad, identical", "string"),
    "final": ("true once a later prompt made the vote final", "bool"),
    "policy": ("live handoff policy", "string"),
    "threshold": ("live handoff threshold", "float64"),
    "score": ("live policy score (hand off when score >= threshold)", "float64"),
    "handed_off": ("whether the policy handed this turn off", "bool"),
    "prompt": ("the participant's prompt for this turn", "string"),
    "answer_off": ("handoff-off answer (local model)", "string"),
    "answer_on": ("handoff-on answer (cloud when handed off, else local)", "string"),
    "model_off": ("model of the handoff-off answer", "string"),
    "model_on": ("model of the handoff-on answer", "string"),
    "source_on": ("local or cloud", "string"),
    "latency_off_ms": ("total latency of the off answer", "float64"),
    "latency_on_ms": ("total latency of the on answer", "float64"),
    "cost_on": ("cloud cost of the on answer (event currency)", "float64"),
    "stars_off": ("1-5 stars for the off answer", "int32"),
    "stars_on": ("1-5 stars for the on answer", "int32"),
    "stars_both": ("1-5 stars when the panes were identical", "int32"),
    "tags_off": ("reason tags for the off answer, ';'-separated", "string"),
    "tags_on": ("reason tags for the on answer, ';'-separated", "string"),
    "tags_both": ("reason tags when identical, ';'-separated", "string"),
    "comment": ("free-text comment", "string"),
    "created_at": ("vote time (UTC)", "timestamp"),
}


def vote_rows(batches: Iterable[list[ConversationRow]]) -> Iterator[dict[str, Any]]:
    for batch in batches:
        for conversation in batch:
            for turn in conversation.turns:
                off, on, decision = turn.answers.get("off"), turn.answers.get("on"), turn.decision
                for vote in turn.votes:
                    ratings = vote.ratings
                    yield {
                        "vote_id": vote.id,
                        "conversation_id": conversation.id,
                        "turn_index": turn.index,
                        "event": conversation.event,
                        "region": conversation.region,
                        "participant": conversation.participant,
                        "language": turn.language,
                        "category": turn.category or conversation.category,
                        "handoff_side": conversation.handoff_side,
                        "winner": vote.winner,
                        "winner_arm": vote.winner_arm,
                        "final": vote.final,
                        "policy": decision.policy if decision else None,
                        "threshold": decision.threshold if decision else None,
                        "score": decision.score if decision else None,
                        "handed_off": decision.handed_off if decision else None,
                        "prompt": turn.prompt,
                        "answer_off": off.text if off else None,
                        "answer_on": on.text if on else None,
                        "model_off": off.model if off else None,
                        "model_on": on.model if on else None,
                        "source_on": on.source if on else None,
                        "latency_off_ms": off.latency_ms if off else None,
                        "latency_on_ms": on.latency_ms if on else None,
                        "cost_on": on.cost if on else None,
                        **{f"stars_{arm}": ratings[arm].stars if arm in ratings else None for arm in ("off", "on", "both")},
                        **{f"tags_{arm}": ";".join(ratings[arm].tags) if arm in ratings else None for arm in ("off", "on", "both")},
                        "comment": vote.comment,
                        "created_at": vote.created_at.astimezone(dt.UTC),
                    }  # fmt: skip
