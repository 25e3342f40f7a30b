"""Preference pairs in TRL's conversational format (``prompt``, ``chosen``, ``rejected`` message lists).

A pair comes from a decided vote (the winning arm's answer is chosen), or from a tie whose star
ratings order the two answers. Both-bad, identical and unordered ties are left out, and so are pairs
whose stars contradict the vote, or whose arms had different earlier answers (no shared prompt).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from db.vocabulary import DECIDED
from feedback.export import jsontext as js
from feedback.export.dataset import Batch, Tally

SUFFIX = ".jsonl"
SKIPS = frozenset({"decisions"})  # not read: dpo never uses them
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


def _stars(batch: Batch, arm: str, votes: np.ndarray) -> np.ndarray:
    """Per vote (rows ``votes``), the stars its rating of ``arm`` gave; nan without one (or without stars)."""
    r = batch.ratings
    rows = np.flatnonzero(pc.fill_null(pc.equal(r["arm"], arm), False).to_numpy(zero_copy_only=False))
    found = js.positions(r["vote_id"].take(pa.array(rows)), batch.votes["id"].take(pa.array(votes)))
    stars = r["stars"].take(pa.array(rows)).cast(pa.float64()).to_numpy(zero_copy_only=False)
    return np.where(found >= 0, stars[np.maximum(found, 0)] if rows.size else np.nan, np.nan)


def _count(tally: Tally, reasons: np.ndarray) -> None:
    for reason, n in zip(*np.unique(reasons[reasons != ""].astype(str), return_counts=True), strict=True):
        tally.skipped[str(reason)] += int(n)


def pair_lines(batch: Batch, tally: Tally) -> tuple[bytes, int]:
    """The batch's preference pairs, one JSON object a line, and how many, with the same counts in the tally as
    the vote-by-vote rules (``_preferred`` and ``_pair`` before): built column-wise (``feedback.export.jsontext``)."""
    t, v = batch.turns, batch.votes
    vote_turn = js.positions(t["id"], v["turn_id"])
    order = np.argsort(vote_turn, kind="stable")  # the nested rows' order: turn by turn, a turn's votes by id
    if not len(order):
        return b"", 0
    turn = vote_turn[order]
    # which arm is preferred: the decided vote unless its stars say otherwise, or a tie's stars
    on, off = _stars(batch, "on", order), _stars(batch, "off", order)
    ordered = ~np.isnan(on) & ~np.isnan(off) & (on != off)
    by_stars = np.where(ordered, np.where(on > off, "on", "off"), "")
    verdict = v["winner_arm"].take(pa.array(order)).to_numpy(zero_copy_only=False).astype(object)
    decided = np.isin(verdict, list(DECIDED))
    contradicts = decided & ordered & (by_stars != verdict)
    preferred = np.where(decided & ~contradicts, verdict, np.where((verdict == "tie") & ordered, by_stars, ""))
    reason = np.where(
        contradicts,
        "decided votes left out: stars contradict the vote",
        np.where(
            decided,
            "decided votes read",
            np.where(
                (verdict == "tie") & ordered, "ties ordered by stars read", [f"{w} votes left out" for w in verdict]
            ),
        ),
    )
    _count(tally, reason.astype(object))
    # which pairs hold: both answers there and different, and the same earlier answers in both arms
    chats = js.Chats(batch)
    texts = batch.answers["text"]
    answer_off, answer_on = chats.answer["off"], chats.answer["on"]
    text_off, text_on = js.take(texts, answer_off), js.take(texts, answer_on)
    same_turn = pc.fill_null(pc.equal(text_off, text_on), False).to_numpy(zero_copy_only=False)
    same_turn |= (answer_off < 0) & (answer_on < 0)  # per turn, both arms' assistant messages equal
    differing = np.zeros(len(same_turn) + 1, dtype=np.int64)
    np.cumsum(~same_turn, out=differing[1:])  # turns whose answers differ, before each row
    index = t["index"].take(pa.array(turn)).to_numpy(zero_copy_only=False)
    earlier = np.clip(index, 0, chats.count[turn])
    start = chats.start[turn]
    asked = preferred != ""
    missing = (answer_off[turn] < 0) | (answer_on[turn] < 0) | same_turn[turn]
    history = differing[start + earlier] - differing[start] > 0
    _count(
        tally,
        np.where(
            asked & missing,
            "pairs left out: answers identical or missing",
            np.where(asked & history, "pairs left out: arms had different earlier answers", ""),
        ).astype(object),
    )
    keep = asked & ~missing & ~history
    if not keep.any():
        return b"", 0
    turn, chosen_on = turn[keep], preferred[keep] == "on"
    before = chats.messages("off", turn, earlier[keep])
    user = js.join('{"role":"user","content":', js.strings(t["prompt"].take(pa.array(turn))), "}")
    prompt = pc.if_else(pa.array(earlier[keep] > 0), js.join(before, ",", user), user)
    on_text = js.strings(js.take(texts, answer_on[turn]))
    off_text = js.strings(js.take(texts, answer_off[turn]))
    mask = pa.array(chosen_on)
    record = js.obj(
        [
            ("prompt", ("[", prompt, "]")),
            ("chosen", ('[{"role":"assistant","content":', pc.if_else(mask, on_text, off_text), "}]")),
            ("rejected", ('[{"role":"assistant","content":', pc.if_else(mask, off_text, on_text), "}]")),
        ],
        after="\n",
    )
    return js.lines(record), int(keep.sum())


def write(batches: Iterable[Batch], out: Path, tally: Tally) -> int:
    rows = 0
    with out.open("wb") as handle:
        for batch in batches:
            text, written = pair_lines(batch, tally)
            handle.write(text)
            rows += written
    return rows
