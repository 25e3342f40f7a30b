"""Preference pairs in TRL's conversational format (``prompt``, ``chosen``, ``rejected`` message lists).

A pair comes from a decided vote (the winning arm's answer is chosen), or from a tie whose star
ratings order the two answers. Both-bad, identical and unordered ties are left out, and so are pairs
whose stars contradict the vote, or whose arms had different earlier answers (no shared prompt).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson

from db.vocabulary import DECIDED, SHOWN_ARMS
from feedback.export.dataset import Batch, ConversationRow, Tally, TurnRow, VoteRow, conversation_rows

SUFFIX = ".jsonl"
UNIT = "pair"
FIELDS = {
    "prompt": "messages before the answer: earlier turns (identical in both arms) and the user prompt",
    "chosen": "the preferred assistant answer, as a one-message list",
    "rejected": "the other assistant answer, as a one-message list",
}
NOTES = [
    "Reads with `datasets.load_dataset('json', data_files=...)` and TRL's `DPOTrainer` (conversational "
    "preference format).",
    "Pairs come from decided votes, and from ties whose star ratings order the two answers.",
]


def _preferred(vote: VoteRow, tally: Tally) -> str | None:
    stars = {arm: vote.ratings[arm].stars for arm in SHOWN_ARMS if arm in vote.ratings}
    by_stars = None
    if stars.get("on") is not None and stars.get("off") is not None and stars["on"] != stars["off"]:
        by_stars = "on" if stars["on"] > stars["off"] else "off"
    if vote.winner_arm in DECIDED:
        if by_stars is not None and by_stars != vote.winner_arm:
            tally.skipped["decided votes left out: stars contradict the vote"] += 1
            return None
        tally.skipped["decided votes read"] += 1
        return vote.winner_arm
    if vote.winner_arm == "tie" and by_stars is not None:
        tally.skipped["ties ordered by stars read"] += 1
        return by_stars
    tally.skipped[f"{vote.winner_arm} votes left out"] += 1
    return None


def _pair(conversation: ConversationRow, turn: TurnRow, preferred: str, tally: Tally) -> dict | None:
    off, on = turn.answers.get("off"), turn.answers.get("on")
    if off is None or on is None or off.text == on.text:
        tally.skipped["pairs left out: answers identical or missing"] += 1
        return None
    history_off = conversation.messages("off", turn.index - 1) if turn.index else []
    if history_off != (conversation.messages("on", turn.index - 1) if turn.index else []):
        tally.skipped["pairs left out: arms had different earlier answers"] += 1
        return None
    answers = {"on": on.text, "off": off.text}
    other = "off" if preferred == "on" else "on"
    return {
        "prompt": [*history_off, {"role": "user", "content": turn.prompt}],
        "chosen": [{"role": "assistant", "content": answers[preferred]}],
        "rejected": [{"role": "assistant", "content": answers[other]}],
    }


def write(batches: Iterable[Batch], out: Path, tally: Tally) -> int:
    rows = 0
    with out.open("wb") as handle:
        for batch in batches:
            for conversation in conversation_rows(batch):
                for turn in conversation.turns:
                    for vote in turn.votes:
                        preferred = _preferred(vote, tally)
                        pair = _pair(conversation, turn, preferred, tally) if preferred else None
                        if pair is not None:
                            handle.write(orjson.dumps(pair, option=orjson.OPT_APPEND_NEWLINE))
                            rows += 1
    return rows
