"""FastChat Chatbot-Arena battle records, so FastChat's Elo / Bradley-Terry notebooks run unchanged.

One JSON object per line with ``question_id, model_a, model_b, winner, judge, conversation_a,
conversation_b, turn, anony, language, tstamp``; the arms are the models. ``identical`` votes have no
winner and are left out (counted in the data card).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson

from db.vocabulary import PANES, arm_of
from feedback.export.arms import arm_names
from feedback.export.dataset import Batch, Tally, conversation_rows

SUFFIX = ".jsonl"
UNIT = "battle"
FASTCHAT_WINNERS = {"a": "model_a", "b": "model_b", "tie": "tie", "both_bad": "tie (bothbad)"}  # from pane terms
FIELDS = {
    "question_id": "conversation id and turn index, `<conversation>-<turn>`",
    "model_a, model_b": "arm shown left / right: the local model, or the local model + handoff policy and threshold",
    "winner": "model_a, model_b, tie or tie (bothbad)",
    "judge": "participant id re-hashed with this export's salt",
    "conversation_a, conversation_b": "OpenAI-style messages each arm showed, through the voted turn",
    "turn": "number of user turns in the conversation at the vote",
    "anony": "always true: arms were hidden until the vote",
    "language": "detected prompt language (ISO 639-1 code, not FastChat's English names)",
    "tstamp": "vote time, Unix seconds",
}
NOTES = ["Votes where the participant said the answers were identical are left out (no winner)."]


def write(batches: Iterable[Batch], out: Path, tally: Tally) -> int:
    rows = 0
    with out.open("wb") as handle:
        for batch in batches:
            for conversation in conversation_rows(batch):
                panes = {pane: arm_of(pane, conversation.handoff_side) for pane in PANES}
                for turn in conversation.turns:
                    off = turn.answers.get("off")
                    decision = turn.decision
                    names = arm_names(
                        off.model if off else None,
                        decision.policy if decision else None,
                        decision.threshold if decision else None,
                    )
                    for vote in turn.votes:
                        if vote.winner not in FASTCHAT_WINNERS:
                            tally.skipped["identical votes (no winner)"] += 1
                            continue
                        record = {
                            "question_id": f"{conversation.id}-{turn.index}",
                            "model_a": names[panes["a"]],
                            "model_b": names[panes["b"]],
                            "winner": FASTCHAT_WINNERS[vote.winner],
                            "judge": conversation.participant,
                            "conversation_a": conversation.messages(panes["a"], turn.index),
                            "conversation_b": conversation.messages(panes["b"], turn.index),
                            "turn": turn.index + 1,
                            "anony": True,
                            "language": turn.language or "unknown",
                            "tstamp": vote.created_at.timestamp(),
                        }
                        handle.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
                        rows += 1
    return rows
