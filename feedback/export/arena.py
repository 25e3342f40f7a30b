"""FastChat Chatbot-Arena battle records, so FastChat's Elo / Bradley-Terry notebooks run unchanged.

One JSON object per line with ``question_id, model_a, model_b, winner, judge, conversation_a,
conversation_b, turn, anony, language, tstamp``; the arms are the models. ``identical`` votes have no
winner and are left out (counted in the data card).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedback.export import jsontext as js
from feedback.export.arms import arm_names
from feedback.export.dataset import Batch, Tally

SUFFIX = ".jsonl"
SKIPS = frozenset({"ratings"})  # not read: arena never uses them
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


def battle_lines(batch: Batch, tally: Tally) -> tuple[bytes, int]:
    """The batch's battle records, one JSON object a line, and how many: what ``orjson.dumps`` wrote for each
    record built from the nested rows, built column-wise (``feedback.export.jsontext``)."""
    c, t, v = batch.conversations, batch.turns, batch.votes
    vote_turn = js.positions(t["id"], v["turn_id"])
    order = np.argsort(vote_turn, kind="stable")  # the nested rows' order: turn by turn, a turn's votes by id
    kept = order[
        pc.is_in(v["winner"], value_set=pa.array(list(FASTCHAT_WINNERS))).to_numpy(zero_copy_only=False)[order]
    ]
    if len(kept) < len(order):
        tally.skipped["identical votes (no winner)"] += len(order) - len(kept)
    if not len(kept):
        return b"", 0
    chats = js.Chats(batch)
    turn = vote_turn[kept]
    conversation = chats.conversation[turn]
    index = t["index"].take(pa.array(turn))
    on_left = pc.equal(c["handoff_side"].take(pa.array(conversation)), "a")  # pane a showed the handoff arm
    on_right = pc.equal(c["handoff_side"].take(pa.array(conversation)), "b")
    through = index.to_numpy() + 1
    said = {arm: chats.messages(arm, turn, through) for arm in ("off", "on")}
    names = _names(batch, chats)
    name = {arm: js.strings(names[arm].take(pa.array(turn))) for arm in ("off", "on")}
    winners = pa.array([FASTCHAT_WINNERS[w] for w in v["winner"].take(pa.array(kept)).to_pylist()], pa.string())
    language = t["language"].take(pa.array(turn))
    micros = (
        v["created_at"].take(pa.array(kept)).cast(pa.timestamp("us")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    )
    record = js.obj(
        [
            ("question_id", js.join('"', js.ints(c["id"].take(pa.array(conversation))), "-", js.ints(index), '"')),
            ("model_a", pc.if_else(on_left, name["on"], name["off"])),
            ("model_b", pc.if_else(on_right, name["on"], name["off"])),
            ("winner", js.strings(winners)),
            ("judge", js.strings(c["participant"].take(pa.array(conversation)))),
            ("conversation_a", ("[", pc.if_else(on_left, said["on"], said["off"]), "]")),
            ("conversation_b", ("[", pc.if_else(on_right, said["on"], said["off"]), "]")),
            ("turn", js.ints(pc.add(index, 1))),
            ("anony", "true"),
            ("language", js.strings(pc.if_else(pc.fill_null(pc.not_equal(language, ""), False), language, "unknown"))),
            ("tstamp", js.floats(pa.array(micros.astype(np.float64) / 1e6))),  # datetime.timestamp(): µs / 10**6
        ],
        after="\n",
    )
    return js.lines(record), len(kept)


def _names(batch: Batch, chats: js.Chats) -> dict[str, pa.Array]:
    """Per turn, both arms' names (``arm_names`` of its off answer's model and its decision), one call per
    distinct (model, policy, threshold)."""
    t, a, d = batch.turns, batch.answers, batch.decisions
    model = js.take(a["model"], chats.answer["off"]).to_pylist()
    decision = js.positions(d["turn_id"], t["id"])
    policy = js.take(d["policy"], decision).to_pylist()
    threshold = js.take(d["threshold"], decision).to_pylist()
    known: dict[tuple, dict[str, str]] = {}
    named = [
        known.get(key) or known.setdefault(key, arm_names(*key)) for key in zip(model, policy, threshold, strict=True)
    ]
    return {arm: pa.array([names[arm] for names in named], pa.string()) for arm in ("off", "on")}


def write(batches: Iterable[Batch], out: Path, tally: Tally) -> int:
    rows = 0
    with out.open("wb") as handle:
        for batch in batches:
            text, written = battle_lines(batch, tally)
            handle.write(text)
            rows += written
    return rows
