"""JSON Lines: one conversation per line, with its turns, answers, handoff decision and votes nested."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from feedback.export.dataset import ConversationRow, Tally

SUFFIX = ".jsonl"
UNIT = "conversation"
FIELDS = {
    "id, event, region": "conversation id, event code, region (sf / europe / apac)",
    "participant": "participant id re-hashed with this export's salt",
    "handoff_side": "pane (a = left) that showed the handoff-on arm",
    "turns[].prompt, language, category": "the prompt of each turn and what is known about it",
    "turns[].answers.{off,on,shadow}": "answers per arm; `shadow` is a cloud answer fetched but never shown",
    "turns[].decision": "live policy, threshold, score, decision, shadow propensity and every stored signal",
    "turns[].votes[]": "votes cast after that turn: winner (pane), winner_arm, comment, ratings per arm",
}
NOTES: list[str] = []


def write(batches: Iterable[list[ConversationRow]], out: Path, tally: Tally) -> int:
    rows = 0
    with out.open("w", encoding="utf-8") as handle:
        for batch in batches:
            for conversation in batch:
                handle.write(json.dumps(asdict(conversation), ensure_ascii=False, default=str) + "\n")
                rows += 1
    return rows
