"""One flat row per vote, shared by the CSV and Parquet formats (same columns, same meanings)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from db.vocabulary import BOTH
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
    "energy_off_wh": ("estimated energy of the off answer in Wh (measured time x device power)", "float64"),
    "energy_on_wh": ("estimated energy of the on answer in Wh (EcoLogits when cloud)", "float64"),
    "stars_off": ("1-5 stars for the off answer", "int32"),
    "stars_on": ("1-5 stars for the on answer", "int32"),
    "stars_both": ("1-5 stars when the panes were identical", "int32"),
    "tags_off": ("reason tags for the off answer, ';'-separated", "string"),
    "tags_on": ("reason tags for the on answer, ';'-separated", "string"),
    "tags_both": ("reason tags when identical, ';'-separated", "string"),
    "comment": ("free-text comment", "string"),
    "created_at": ("vote time (UTC)", "timestamp"),
    "time_to_vote_ms": ("answers complete -> vote first saved, in ms", "float64"),
    "display": ("live, or fair (both panes released together)", "string"),
    "too_fast": ("saved sooner than the answers can be read (2 s + 10 ms per token of the shorter)", "bool"),
    "flagged_participant": ("the voter looks automated or careless (see participant_flags)", "bool"),
    "participant_flags": ("why: too_fast, same_side, burst (comma-separated)", "string"),
    "reveals_origin": ("an answer names a model or AI company (the vote was not blind)", "bool"),
    "duplicate": ("the voter already sent this prompt (exactly or nearly)", "bool"),
}


def vote_tuples(batch: list[ConversationRow]) -> list[tuple[Any, ...]]:
    """One tuple per vote, values in ``COLUMNS`` order (tuples, not dicts: a million rows stay cheap)."""
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    for conversation in batch:
        cid, event, region = conversation.id, conversation.event, conversation.region
        participant, side = conversation.participant, conversation.handoff_side
        for turn in conversation.turns:
            if not turn.votes:
                continue
            off, on, decision = turn.answers.get("off"), turn.answers.get("on"), turn.decision
            shared = (
                (decision.policy, decision.threshold, decision.score, decision.handed_off, turn.prompt)
                if decision
                else (None, None, None, None, turn.prompt)
            )
            answers = (
                off.text if off else None,
                on.text if on else None,
                off.model if off else None,
                on.model if on else None,
                on.source if on else None,
                off.latency_ms if off else None,
                on.latency_ms if on else None,
                on.cost if on else None,
                off.energy_wh if off else None,
                on.energy_wh if on else None,
            )
            category = turn.category or conversation.category
            for vote in turn.votes:
                ratings = vote.ratings
                r_off, r_on, r_both = ratings.get("off"), ratings.get("on"), ratings.get(BOTH)
                append(
                    (
                        vote.id,
                        cid,
                        turn.index,
                        event,
                        region,
                        participant,
                        turn.language,
                        category,
                        side,
                        vote.winner,
                        vote.winner_arm,
                        vote.final,
                        *shared,
                        *answers,
                        r_off.stars if r_off else None,
                        r_on.stars if r_on else None,
                        r_both.stars if r_both else None,
                        ";".join(r_off.tags) if r_off else None,
                        ";".join(r_on.tags) if r_on else None,
                        ";".join(r_both.tags) if r_both else None,
                        vote.comment,
                        vote.created_at.astimezone(dt.UTC),
                        vote.time_to_vote_ms,
                        vote.display,
                        *(
                            (f.too_fast, f.flagged_participant, f.participant_flags, f.reveals_origin, f.duplicate)
                            if (f := vote.flags) is not None
                            else (None, None, None, None, None)
                        ),
                    )
                )
    return rows
