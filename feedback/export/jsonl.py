"""JSON Lines: one conversation per line, with its turns, answers, handoff decision and votes nested."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson

from feedback.export.dataset import Batch, Tally, conversation_rows

SUFFIX = ".jsonl"
FLAGS = True  # votes carry their quality flags (feedback.research)
UNIT = "conversation"
FIELDS = {
    "id, event, region": "conversation id, event code, region (sf / europe / apac)",
    "participant": "participant id re-hashed with this export's salt",
    "handoff_side": "pane (a = left) that showed the handoff-on arm",
    "turns[].prompt, language, category": "the prompt of each turn and what is known about it",
    "turns[].answers.{off,on,shadow}": "answers per arm; `shadow` is a cloud answer fetched but never shown",
    "turns[].decision": "live policy, threshold, score, decision, shadow propensity and every stored signal",
    "turns[].votes[]": "votes cast after that turn: winner (pane), winner_arm, comment, ratings per arm",
    "turns[].votes[].time_to_vote_ms, display": "answers complete -> vote saved (ms); live or fair (latency-fair) display",
    "turns[].votes[].flags": "vote-quality flags: too_fast, flagged_participant (+ why), reveals_origin, duplicate",
}
NOTES: list[str] = []
SIGNALS = True  # every stored signal of each decision is written


# orjson writes the dataclasses field by field like ``dataclasses.asdict``; times keep their str() form
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_APPEND_NEWLINE


def write(batches: Iterable[Batch], out: Path, tally: Tally) -> int:
    rows = 0
    with out.open("wb") as handle:
        for batch in batches:
            handle.write(
                b"".join(
                    orjson.dumps(conversation, default=str, option=_OPTIONS)
                    for conversation in conversation_rows(batch)
                )
            )
            rows += len(batch)
    return rows
