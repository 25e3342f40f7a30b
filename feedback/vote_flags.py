"""Vote-quality flags: too fast, flagged participant, origin-revealing, duplicate (``feedback.research``).

Apart from the research sections so that exports, which carry the flags on every vote, import only
pandas and numpy (not the statistics stack). Definitions: see ``feedback.research``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from db.research import participant_vote_frames
from db.session import get_engine
from feedback.embeddings import Embed
from feedback.export.dataset import ExportFilters, FlagColumns, FlagOf, conversation_query

READ_FLOOR_MS = 2_000.0
READ_MS_PER_TOKEN = 10.0
MIN_VOTES_FAST = 3
MIN_PANE_VOTES_SAME_SIDE = 6
SAME_SIDE_SHARE = 0.95
BURST_VOTES, BURST_SECONDS = 5, 60.0
NEAR_DUPLICATE = 0.9


def _normalise(prompt: str) -> str:
    return re.sub(r"[\s?.!]+$", "", re.sub(r"\s+", " ", prompt.strip().lower()))


def duplicate_votes(votes: pd.DataFrame, embed: Embed | None) -> np.ndarray:
    """True for a vote whose prompt its participant already sent (exactly, or nearly with ``embed``)."""
    prompts = votes["prompt"]
    key = prompts.map({prompt: _normalise(prompt) for prompt in pd.unique(prompts)})  # once per distinct prompt
    duplicate = pd.DataFrame({"p": votes["participant_id"], "k": key}).duplicated().to_numpy()
    if embed is None or votes.empty:
        return duplicate
    repeaters = votes.groupby("participant_id")["vote_id"].transform("size").to_numpy() > 1
    distinct = sorted(set(key[repeaters & ~duplicate]))
    if len(distinct) < 2:
        return duplicate
    vectors = embed(distinct)
    index = {text: i for i, text in enumerate(distinct)}
    out = duplicate.copy()
    for _, rows in votes[repeaters & ~duplicate].groupby("participant_id").groups.items():
        positions = votes.index.get_indexer(rows)
        seen: list[int] = []
        for pos in positions:  # in vote order: a later prompt near an earlier one is the duplicate
            v = index[key.iloc[pos]]
            if seen and float((vectors[seen] @ vectors[v]).max()) >= NEAR_DUPLICATE:
                out[pos] = True
            else:
                seen.append(v)
    return out


def quality_flags(votes: pd.DataFrame, embed: Embed | None = None) -> pd.DataFrame:
    """Per vote: too_fast, flagged_participant (with its reasons), reveals_origin, duplicate."""
    shorter = np.fmin(votes["on_tokens"].astype(float), votes["off_tokens"].astype(float)).fillna(0).to_numpy()
    ttv = votes["time_to_vote_ms"].astype(float).to_numpy()
    too_fast = ttv < READ_FLOOR_MS + READ_MS_PER_TOKEN * shorter  # nan (unknown) compares False
    frame = pd.DataFrame({"participant_id": votes["participant_id"].to_numpy(), "too_fast": too_fast})
    frame["pane"] = votes["winner"].where(votes["winner"].isin(["a", "b"])).to_numpy()
    per = frame.groupby("participant_id").agg(
        votes=("too_fast", "size"), fast=("too_fast", "sum"), panes=("pane", "count")
    )
    left = frame[frame.pane == "a"].groupby("participant_id").size().reindex(per.index, fill_value=0)
    side_share = np.maximum(left, per["panes"] - left) / per["panes"].where(per["panes"] > 0)
    reasons = pd.DataFrame(index=per.index)
    reasons["too_fast"] = (per["votes"] >= MIN_VOTES_FAST) & (per["fast"] >= per["votes"] / 2)
    reasons["same_side"] = (per["panes"] >= MIN_PANE_VOTES_SAME_SIDE) & (side_share >= SAME_SIDE_SHARE)
    reasons["burst"] = _bursts(votes).reindex(per.index, fill_value=False)
    flagged = reasons.any(axis=1)
    reasons_text = _joined(reasons)
    return pd.DataFrame(
        {
            "too_fast": too_fast,
            "flagged_participant": votes["participant_id"].map(flagged).fillna(False).to_numpy(bool),
            "participant_flags": votes["participant_id"].map(reasons_text).fillna("").to_numpy(),
            "reveals_origin": (
                votes["on_reveals"].fillna(False).astype(bool) | votes["off_reveals"].fillna(False).astype(bool)
            ).to_numpy(),
            "duplicate": duplicate_votes(votes, embed),
        },
        index=votes.index,
    )


def _joined(reasons: pd.DataFrame) -> pd.Series:
    """Per row, the names of the true columns joined by commas: one lookup per combination, not a
    Python call per participant (the same texts as ``",".join(k for k, v in row.items() if v)``)."""
    if reasons.empty:
        return reasons.apply(lambda r: ",".join(k for k, v in r.items() if v), axis=1)
    names = list(reasons.columns)
    code = np.zeros(len(reasons), dtype=np.int64)
    for bit, name in enumerate(names):
        code |= reasons[name].to_numpy(bool).astype(np.int64) << bit
    texts = np.array(
        [",".join(name for bit, name in enumerate(names) if combo >> bit & 1) for combo in range(1 << len(names))],
        dtype=object,
    )
    return pd.Series(texts[code], index=reasons.index)


def _bursts(votes: pd.DataFrame) -> pd.Series:
    """Participants with ``BURST_VOTES`` votes inside ``BURST_SECONDS``."""
    if votes.empty:
        return pd.Series(dtype=bool)
    times = pd.to_datetime(votes["created_at"], utc=True)
    frame = pd.DataFrame({"p": votes["participant_id"].to_numpy(), "t": times.to_numpy()}).sort_values(["p", "t"])
    later = frame.groupby("p")["t"].shift(-(BURST_VOTES - 1))
    burst = (later - frame["t"]).dt.total_seconds() <= BURST_SECONDS
    return burst.groupby(frame["p"]).any()


# what quality_flags reads: the flags in exports load only these per vote
FLAG_COLUMNS = (
    "vote_id",
    "participant_id",
    "prompt",
    "winner",
    "time_to_vote_ms",
    "created_at",
    "on_tokens",
    "off_tokens",
    "on_reveals",
    "off_reveals",
)


_REASONS_MAX = 255  # participant_flags texts are coded in one byte (a few combinations of three reasons)


def flag_lookup(url: str, filters: ExportFilters, embed: Embed | None = None) -> FlagOf:
    """Each vote's quality flags over the whole selection (participants, repeats), a few participants
    at a time: the flags depend only on the voter's own votes, so each frame of complete participants
    (``db.research.participant_vote_frames``) gives the same flags as one frame of every vote would.
    What is kept is 10 bytes a vote (id, four flag bits, a code for the reasons text): a million votes
    hold ~10 MB instead of a pandas row each."""
    visible = conversation_query(filters).subquery()
    ids_parts: list[np.ndarray] = []
    bits_parts: list[np.ndarray] = []
    code_parts: list[np.ndarray] = []
    codes: dict[str, int] = {}
    with get_engine(url).connect() as connection:
        for votes in participant_vote_frames(connection, visible, FLAG_COLUMNS):
            flags = quality_flags(votes.reset_index(drop=True), embed)
            ids_parts.append(votes["vote_id"].to_numpy(np.int64))
            bits = flags["too_fast"].to_numpy(bool).astype(np.uint8)
            bits |= flags["flagged_participant"].to_numpy(bool).astype(np.uint8) << 1
            bits |= flags["reveals_origin"].to_numpy(bool).astype(np.uint8) << 2
            bits |= flags["duplicate"].to_numpy(bool).astype(np.uint8) << 3
            bits_parts.append(bits)
            why = flags["participant_flags"].to_numpy(object)
            distinct = {text: codes.setdefault(str(text), len(codes)) for text in pd.unique(why)}
            if len(codes) > _REASONS_MAX:
                raise ValueError("more participant_flags combinations than one byte codes")
            code_parts.append(np.array([distinct[text] for text in why], dtype=np.uint8))
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int64)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    bits = (np.concatenate(bits_parts) if bits_parts else np.zeros(0, np.uint8))[order]
    code = (np.concatenate(code_parts) if code_parts else np.zeros(0, np.uint8))[order]
    del ids_parts, bits_parts, code_parts, order
    reasons = np.array(list(codes), dtype=object)

    def flag_of(vote_ids: Sequence[int]) -> FlagColumns:
        wanted = np.asarray(vote_ids, dtype=np.int64)
        if not ids.size:
            return FlagColumns(
                np.zeros(wanted.size, bool), np.zeros(wanted.size, np.uint8), np.full(wanted.size, "", dtype=object)
            )
        at = np.minimum(np.searchsorted(ids, wanted), ids.size - 1)  # one lookup for the whole batch
        return FlagColumns(ids[at] == wanted, bits[at], reasons[code[at]])

    return flag_of
