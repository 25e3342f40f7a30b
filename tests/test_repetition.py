"""The loop detector (feedback.repetition): word n-gram repetition over a streamed text, and the guard that
stops any answer stream once it loops (playground.engine.loop_guard), on the contract's own stream."""

from __future__ import annotations

import random
import threading
import time

import pytest

from feedback.repetition import LoopDetector, LoopRule, repetition
from playground.engine.contract import AnswerResult, Generation, GenerationRequest
from playground.engine.loop_guard import REPETITION, LoopGuard

PROSE = (
    "Tea is a drink made by pouring hot water over the cured leaves of the tea plant. It was first "
    "drunk in China, reached Japan and Korea, and later spread to Europe through Dutch and Portuguese "
    "traders. Black, green and oolong teas differ in how long the leaves are left to oxidise before "
    "they are dried; milk, lemon or honey are added to taste in many countries."
)
COUPLET = "A cup of tea, a sweet delight,\nI am the one who makes it, the one who makes it,\n"
LOOP = "In the heart of the garden, where the sun sets,\n" + COUPLET * 8
LIST = "\n".join(f"{i}. {fruit}" for i, fruit in enumerate(["Apples", "Pears", "Plums", "Kiwis", "Limes"] * 8, 1))
TABLE = "| name | colour |\n| --- | --- |\n" + "\n".join(
    f"| {n} | {c} |"
    for n, c in zip(
        ["apple", "lime", "plum", "kiwi", "fig"], ["red", "green", "purple", "brown", "violet"], strict=True
    )
)


def test_ordinary_prose_lists_and_tables_do_not_loop() -> None:
    for text in (PROSE, LIST, TABLE, PROSE + "\n\n" + PROSE[:120]):
        seen = repetition(text)
        assert not seen.looped, text
        assert seen.repetition < LoopRule().share
    assert repetition(PROSE).repetition == 0.0 and repetition(PROSE).repeated_share == 0.0


def test_a_verbatim_loop_is_caught_within_a_few_repetitions() -> None:
    seen = repetition(LOOP)
    words_per_couplet = 21
    assert seen.looped and seen.repetition == 1.0
    assert seen.loop_at_word is not None
    assert seen.loop_at_word <= 10 + 3 * words_per_couplet  # stopped by the third couplet, not the eighth
    assert 0.5 < seen.repeated_share < 1.0


def test_feeding_in_any_pieces_gives_the_same_result_as_the_whole_text() -> None:
    whole = repetition(LOOP)
    rng = random.Random(7)
    for _ in range(20):
        detector = LoopDetector()
        cut = sorted(rng.sample(range(1, len(LOOP)), 40))
        for start, end in zip([0, *cut], [*cut, len(LOOP)], strict=True):
            detector.feed(LOOP[start:end])
        assert detector.finish() == whole
    by_character = LoopDetector()
    fired = next(i for i, ch in enumerate(LOOP) if by_character.feed(ch))
    assert LOOP[: fired + 1].count("sweet delight") <= 3  # fires as the loop is written, not at the end


def test_words_ignore_case_and_japanese_is_read_character_by_character() -> None:
    assert repetition(("The robot loves tea. " + "the Robot LOVES tea. ") * 10).looped
    assert repetition("ロボットはお茶が大好きです。" * 12).looped
    assert not repetition("ロボットはお茶が大好きです。毎朝、庭で緑茶を淹れて、友達と一緒に静かに飲みます。").looped


def test_a_repetition_shorter_than_the_window_or_below_the_share_does_not_count() -> None:
    rule = LoopRule(ngram=4, window=32, share=0.9)
    assert not repetition("tea " * 30, rule).looped  # 27 four-grams: no full window yet
    assert repetition("tea " * 40, rule).looped
    # one fresh word in every six: well below 90 % of the window repeats
    varied = " ".join(f"the robot drinks its tea number{i}" for i in range(20))
    assert not repetition(varied, rule).looped
    assert repetition(varied, LoopRule(ngram=2, window=16, share=0.5)).looped  # a looser rule catches it


def test_rules_that_could_never_fire_or_always_would_are_refused() -> None:
    for bad in ({"ngram": 0}, {"window": 0}, {"share": 0.0}, {"share": 1.5}):
        with pytest.raises(ValueError, match="loop rule"):
            LoopRule(**bad)


def _written_by_hand(deltas: list[str]) -> tuple[Generation, threading.Thread]:
    """The contract's own stream, filled by a thread that writes like an engine and honours stop()."""
    stream = Generation(GenerationRequest(messages=[], max_new_tokens=len(deltas), temperature=0.0, top_p=1.0))

    def engine() -> None:
        written = []
        for delta in deltas:
            if stream.stopped:
                break
            written.append(delta)
            stream._emit(delta)
            time.sleep(0.001)
        reason = "stopped" if stream.stopped else "stop"
        stream._finish(
            AnswerResult(
                text="".join(written),
                model="m",
                tokens_in=1,
                tokens_out=len(written),
                ttft_ms=1.0,
                latency_ms=1.0,
                finish_reason=reason,
            )
        )

    thread = threading.Thread(target=engine)
    thread.start()
    return stream, thread


def test_the_guard_stops_any_answer_stream_once_it_loops_and_says_why() -> None:
    words = [f"{w} " for w in LOOP.split(" ")]
    stream, engine = _written_by_hand(words)
    guarded = LoopGuard(stream)
    read = "".join(guarded)
    engine.join()
    result = guarded.wait(timeout=10)
    assert guarded.looped and stream.stopped and result.finish_reason == REPETITION
    assert result.text == read and len(read) < len(LOOP) / 2  # stopped a few words after the rule fired
    assert guarded.result is result and stream.result.finish_reason == "stopped"


def test_the_guard_leaves_an_answer_that_does_not_loop_alone() -> None:
    stream, engine = _written_by_hand([f"{w} " for w in PROSE.split(" ")])
    guarded = LoopGuard(stream)
    assert "".join(guarded).strip() == PROSE.strip()
    engine.join()
    assert not guarded.looped and guarded.wait(timeout=10) is stream.result
    assert guarded.result.finish_reason == "stop" and not stream.stopped
