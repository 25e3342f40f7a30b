"""Vote-quality flags: too fast, flagged participant, origin-revealing, duplicate (``feedback.research``).

Apart from the research sections so that exports, which carry the flags on every vote, import only
pandas and numpy (not the statistics stack). Definitions: see ``feedback.research``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from db.research import participant_vote_frames, participant_vote_tables
from db.session import get_engine
from feedback.embeddings import Embed
from feedback.export.dataset import ExportFilters, FlagColumns, conversation_query, utc_times
from feedback.memory import release_free_memory

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


REASONS = ("too_fast", "same_side", "burst")  # why a participant is flagged, in participant_flags' order
# participant_flags' text per reason code (bit i: REASONS[i]), as ",".join of the reasons that hold
REASON_TEXTS = np.array(
    [",".join(name for bit, name in enumerate(REASONS) if code >> bit & 1) for code in range(1 << len(REASONS))],
    dtype=object,
)


def too_fast_votes(time_to_vote_ms: np.ndarray, on_tokens: np.ndarray, off_tokens: np.ndarray) -> np.ndarray:
    """Saved sooner than the shorter answer can be read (floats, nan for unknown: unknown is never too fast)."""
    shorter = np.nan_to_num(np.fmin(on_tokens, off_tokens), nan=0.0)
    with np.errstate(invalid="ignore"):
        return time_to_vote_ms < READ_FLOOR_MS + READ_MS_PER_TOKEN * shorter


def participant_reasons(
    participant: np.ndarray, too_fast: np.ndarray, winner: np.ndarray, times_us: np.ndarray
) -> np.ndarray:
    """Per vote, its participant's reason code (bits of ``REASONS``; 0: not flagged), over the votes given
    (every vote of each participant in them, in any order). ``winner`` is the pane voted (a, b, else not a
    pane); ``times_us`` the vote times in microseconds. numpy only: no Python per participant."""
    if not len(participant):
        return np.zeros(0, dtype=np.int64)
    _, who = np.unique(participant, return_inverse=True)
    who = who.reshape(-1)
    n = int(who.max()) + 1
    votes = np.bincount(who, minlength=n)
    fast = np.bincount(who, weights=too_fast.astype(np.float64), minlength=n)
    left = np.bincount(who, weights=(winner == "a").astype(np.float64), minlength=n)
    panes = left + np.bincount(who, weights=(winner == "b").astype(np.float64), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.maximum(left, panes - left) / np.where(panes > 0, panes, np.nan)
        same_side = (panes >= MIN_PANE_VOTES_SAME_SIDE) & (share >= SAME_SIDE_SHARE)
    code = ((votes >= MIN_VOTES_FAST) & (fast >= votes / 2)).astype(np.int64)
    code |= same_side.astype(np.int64) << 1
    code |= _bursts(who, times_us, n).astype(np.int64) << 2
    return code[who]


def _bursts(who: np.ndarray, times_us: np.ndarray, n: int) -> np.ndarray:
    """Per participant, whether ``BURST_VOTES`` of their votes fall within ``BURST_SECONDS``."""
    order = np.lexsort((times_us, who))
    who, times = who[order], times_us[order]
    span = BURST_VOTES - 1
    burst = np.zeros(n, dtype=bool)
    if len(who) > span:
        close = (who[span:] == who[:-span]) & (times[span:] - times[:-span] <= int(BURST_SECONDS * 1_000_000))
        burst[who[:-span][close]] = True
    return burst


def _times_us(values: pd.Series) -> np.ndarray:
    return pd.to_datetime(values, utc=True).to_numpy("datetime64[us]").astype(np.int64)


def quality_flags(votes: pd.DataFrame, embed: Embed | None = None) -> pd.DataFrame:
    """Per vote: too_fast, flagged_participant (with its reasons), reveals_origin, duplicate."""
    too_fast = too_fast_votes(
        votes["time_to_vote_ms"].astype(float).to_numpy(),
        votes["on_tokens"].astype(float).to_numpy(),
        votes["off_tokens"].astype(float).to_numpy(),
    )
    winner = votes["winner"].astype(object).to_numpy()
    code = participant_reasons(votes["participant_id"].to_numpy(), too_fast, winner, _times_us(votes["created_at"]))
    return pd.DataFrame(
        {
            "too_fast": too_fast,
            "flagged_participant": code != 0,
            "participant_flags": REASON_TEXTS[code],
            "reveals_origin": (
                votes["on_reveals"].fillna(False).astype(bool) | votes["off_reveals"].fillna(False).astype(bool)
            ).to_numpy(),
            "duplicate": duplicate_votes(votes, embed),
        },
        index=votes.index,
    )


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


def flag_lookup(url: str, filters: ExportFilters, embed: Embed | None = None) -> FlagLookup:
    """Each vote's quality flags over the whole selection (participants, repeats), a few participants
    at a time: the flags depend only on the voter's own votes, so each chunk of complete participants
    (``db.research.participant_vote_tables``: Arrow through ADBC on a SQLite file; else
    ``participant_vote_frames``) gives the same flags as one frame of every vote would (``quality_flags``).
    What is kept is 10 bytes a vote (id, four flag bits, a reasons code): a million votes hold ~10 MB."""
    visible = conversation_query(filters).subquery()
    ids_parts: list[np.ndarray] = []
    bits_parts: list[np.ndarray] = []
    code_parts: list[np.ndarray] = []
    keys: dict[str, int] = {}  # normalised prompt -> a number (duplicates are exact repeats of it)
    normalised: dict[str, int] = {}  # prompt as sent -> that number

    def add(chunk: dict[str, np.ndarray], prompts: pa.Array) -> None:
        too_fast = too_fast_votes(chunk["time_to_vote_ms"], chunk["on_tokens"], chunk["off_tokens"])
        participant = chunk["participant_id"]
        code = participant_reasons(participant, too_fast, chunk["winner"], chunk["times_us"])
        if embed is None:  # exact repeats of a participant's normalised prompt: numbers, one per distinct prompt
            encoded = pc.dictionary_encode(prompts)
            numbers = np.array(
                [
                    normalised.get(t) if t in normalised else _key(t, keys, normalised)
                    for t in encoded.dictionary.to_pylist()
                ],
                dtype=np.int64,
            )
            key = numbers[encoded.indices.to_numpy(zero_copy_only=False)] if len(numbers) else np.zeros(0, np.int64)
            _, first = np.unique(participant.astype(np.int64) * (len(keys) + 1) + key, return_index=True)
            duplicate = np.ones(len(key), dtype=bool)
            duplicate[first] = False
        else:
            frame = pd.DataFrame(
                {"participant_id": participant, "prompt": prompts.to_pylist(), "vote_id": chunk["vote_id"]}
            )
            duplicate = duplicate_votes(frame, embed)
        bits = too_fast.astype(np.uint8)
        bits |= (code != 0).astype(np.uint8) << 1
        bits |= (chunk["on_reveals"] | chunk["off_reveals"]).astype(np.uint8) << 2
        bits |= duplicate.astype(np.uint8) << 3
        ids_parts.append(chunk["vote_id"].astype(np.int64))
        bits_parts.append(bits)
        code_parts.append(code.astype(np.uint8))

    engine = get_engine(url)
    tables = participant_vote_tables(engine, visible, FLAG_COLUMNS)
    if tables is not None:
        for table in tables:
            add(_arrow_chunk(table), table.column("prompt").combine_chunks())
    else:
        with engine.connect() as connection:
            for votes in participant_vote_frames(connection, visible, FLAG_COLUMNS):
                add(_frame_chunk(votes), pa.array(votes["prompt"].tolist(), pa.string()))
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int64)
    bits = np.concatenate(bits_parts) if bits_parts else np.zeros(0, np.uint8)
    code = np.concatenate(code_parts) if code_parts else np.zeros(0, np.uint8)
    for parts in (ids_parts, bits_parts, code_parts):  # let the chunks go before sorting (peak memory)
        parts.clear()
    order = np.argsort(ids, kind="stable")
    ids, bits, code = ids[order], bits[order], code[order]
    del order
    release_free_memory()  # the chunks' freed memory goes back: the export's batches don't start from it
    pa.default_memory_pool().release_unused()
    return FlagLookup(ids, bits, code)


@dataclass(frozen=True)
class FlagLookup:
    """Each vote's flags by id (``flag_lookup``): ids ascending, their flag bits and reasons code. Plain arrays,
    so a worker process of the export (``feedback.export.parts``) gets them pickled (~10 bytes a vote)."""

    ids: np.ndarray
    bits: np.ndarray
    code: np.ndarray

    def __call__(self, vote_ids: Sequence[int]) -> FlagColumns:
        wanted = np.asarray(vote_ids, dtype=np.int64)
        if not self.ids.size:
            return FlagColumns(
                np.zeros(wanted.size, bool), np.zeros(wanted.size, np.uint8), np.full(wanted.size, "", dtype=object)
            )
        at = np.minimum(np.searchsorted(self.ids, wanted), self.ids.size - 1)  # one lookup for the whole batch
        return FlagColumns(self.ids[at] == wanted, self.bits[at], REASON_TEXTS[self.code[at]])


def _key(text: str, keys: dict[str, int], normalised: dict[str, int]) -> int:
    key = _normalise(text)
    normalised[text] = number = keys.setdefault(key, len(keys))
    return number


def _arrow_chunk(table: pa.Table) -> dict[str, np.ndarray]:
    """``participant_vote_tables``' columns as what ``quality_flags`` reads: nan for unknown numbers."""

    def number(name: str) -> np.ndarray:
        values = table.column(name).to_numpy().astype(np.float64)
        values[table.column(f"{name}_null").to_numpy().astype(bool)] = np.nan
        return values

    return {
        "vote_id": table.column("vote_id").to_numpy(),
        "participant_id": table.column("participant_id").to_numpy(),
        "winner": table.column("winner").to_numpy(zero_copy_only=False),
        "time_to_vote_ms": number("time_to_vote_ms"),
        "on_tokens": number("on_tokens"),
        "off_tokens": number("off_tokens"),
        "times_us": utc_times(table.column("created_at").combine_chunks()).cast(pa.int64()).to_numpy(),
        "on_reveals": table.column("on_reveals").to_numpy().astype(bool),  # NULL read as 0: not revealing
        "off_reveals": table.column("off_reveals").to_numpy().astype(bool),
    }


def _frame_chunk(votes: pd.DataFrame) -> dict[str, np.ndarray]:
    return {
        "vote_id": votes["vote_id"].to_numpy(np.int64),
        "participant_id": votes["participant_id"].to_numpy(),
        "winner": votes["winner"].astype(object).to_numpy(),
        "time_to_vote_ms": votes["time_to_vote_ms"].astype(float).to_numpy(),
        "on_tokens": votes["on_tokens"].astype(float).to_numpy(),
        "off_tokens": votes["off_tokens"].astype(float).to_numpy(),
        "times_us": _times_us(votes["created_at"]),
        "on_reveals": votes["on_reveals"].fillna(False).astype(bool).to_numpy(),
        "off_reveals": votes["off_reveals"].fillna(False).astype(bool).to_numpy(),
    }
