"""JSON Lines: one conversation per line, with its turns, answers, handoff decision and votes nested."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feedback.export import jsontext as js
from feedback.export.dataset import Batch, FlagColumns, Tally, VoteFlags, tag_list

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
PARTS = True  # the file is each conversation's line in order: written in parts (feedback.export.parts)


def conversation_lines(batch: Batch) -> bytes:
    """The batch's conversations, one JSON object a line: what ``orjson.dumps`` wrote for each nested
    ``ConversationRow`` (dataclass fields in order, times as ``str(datetime)``), built column-wise
    (``feedback.export.jsontext``)."""
    c, t, a, d, v, r = batch.conversations, batch.turns, batch.answers, batch.decisions, batch.votes, batch.ratings
    n_turns, n_votes = len(t["id"]), len(v["id"])
    arm = js.strings(a["arm"])
    answer = js.obj(
        [
            ("arm", arm),
            ("source", js.strings(a["source"])),
            ("text", js.strings(a["text"])),
            ("model", js.strings(a["model"])),
            ("tokens_out", js.ints(a["tokens_out"])),
            ("latency_ms", js.floats(a["latency_ms"])),
            ("cost", js.floats(a["cost"])),
            ("error_kind", js.strings(a["error_kind"])),
            ("energy_wh", js.floats(a["energy_wh"])),
        ],
        key=arm,  # an entry of the turn's dict of answers, keyed by arm
    )
    answers = js.grouped(answer, js.positions(t["id"], a["turn_id"]), n_turns)  # the dict, in the rows' order
    decision = js.obj(
        [
            ("policy", js.strings(d["policy"])),
            ("threshold", js.floats(d["threshold"])),
            ("score", js.floats(d["score"])),
            ("handed_off", js.bools(d["handed_off"])),
            ("blocked_by", js.strings(d["blocked_by"])),
            ("shadow_propensity", js.floats(d["propensity"])),
            ("signals", batch.signal_texts()),
        ]
    )
    decisions = js.take(decision, js.positions(d["turn_id"], t["id"])).fill_null(js.NULL)
    distinct_tags = pc.unique(r["tags"])
    tags = pa.array([orjson.dumps(tag_list(raw)).decode() for raw in distinct_tags.to_pylist()], js.TEXT)
    rating = js.join(
        js.strings(r["arm"]),
        ':{"stars":',
        js.ints(r["stars"]),
        ',"tags":',
        tags.take(pc.index_in(r["tags"], value_set=distinct_tags)),
        "}",
    )
    ratings = js.grouped(rating, js.positions(v["id"], r["vote_id"]), n_votes)
    vote = js.obj(
        [
            ("id", js.ints(v["id"])),
            ("winner", js.strings(v["winner"])),
            ("winner_arm", js.strings(v["winner_arm"])),
            ("comment", js.strings(v["comment"])),
            ("final", js.bools(v["final"])),
            ("created_at", js.times(v["created_at"])),
            ("ratings", ("{", ratings, "}")),
            ("time_to_vote_ms", js.floats(v["time_to_vote_ms"])),
            ("display", js.strings(v["display"])),
            ("flags", _flags(batch.flags, n_votes)),
        ]
    )
    turn = js.obj(
        [
            ("id", js.ints(t["id"])),
            ("index", js.ints(t["index"])),
            ("prompt", js.strings(t["prompt"])),
            ("language", js.strings(t["language"])),
            ("category", js.strings(t["category"])),
            ("created_at", js.times(t["created_at"])),
            ("answers", ("{", answers, "}")),
            ("decision", decisions),
            ("votes", ("[", js.grouped(vote, js.positions(t["id"], v["turn_id"]), n_turns), "]")),
        ]
    )
    turns = js.grouped(turn, js.positions(c["id"], t["conversation_id"]), len(c["id"]))
    conversation = js.obj(
        [
            ("id", js.ints(c["id"])),
            ("event", js.strings(c["event"])),
            ("region", js.strings(c["region"])),
            ("participant", js.strings(c["participant"])),
            ("handoff_side", js.strings(c["handoff_side"])),
            ("category", js.strings(c["category"])),
            ("created_at", js.times(c["created_at"])),
            ("turns", ("[", turns, "]")),
        ],
        after="\n",
    )
    return js.lines(conversation)


def _flags(flags: FlagColumns | None, n: int) -> pa.Array:
    """Each vote's ``VoteFlags`` as JSON (``null`` without flags), one text per distinct value."""
    if flags is None:
        return pa.nulls(n, js.TEXT).fill_null(js.NULL)
    reason, reasons = pd.factorize(flags.reasons)
    key = flags.bits.astype(np.int64) + 16 * reason  # bits are four flags (0-15)
    distinct, at = np.unique(key, return_inverse=True)
    texts = [
        orjson.dumps(VoteFlags(bool(b & 1), bool(b & 2), str(reasons[k // 16]), bool(b & 4), bool(b & 8))).decode()
        for k, b in ((int(k), int(k) % 16) for k in distinct)
    ]
    written = pa.array(texts, js.TEXT).take(pa.array(at.reshape(-1)))
    return pc.if_else(pa.array(flags.found.astype(bool)), written, js.literal(js.NULL))


def header() -> bytes:
    return b""


def write_body(batches: Iterable[Batch], handle: BinaryIO) -> int:
    """Each batch's lines in turn (``PARTS``: a slice of the selection written alone is its part of the file)."""
    rows = 0
    for batch in batches:
        handle.write(conversation_lines(batch))
        rows += len(batch)
    return rows


def write(batches: Iterable[Batch], out: Path, tally: Tally) -> int:
    with out.open("wb") as handle:
        handle.write(header())
        return write_body(batches, handle)
