"""The batching worker: answers do not depend on who else is being decoded at the same time.

Run in float32 so that a row's logits are the same (to rounding) whether it is decoded alone or in
a padded batch; in bfloat16 the batch's different matmul shapes flip near-tied greedy choices.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from playground.engine.batching import RequestTooLarge
from playground.engine.contract import Generation, LocalResult
from playground.engine.local import LocalEngine
from playground.settings import Settings
from tests.conftest import MODEL_CACHE

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of France?",
    "Name a fruit.",
    "Write a haiku about the sea.",
    "Give one tip for learning Python.",
]


def chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    engine = LocalEngine(Settings(model_cache_dir=MODEL_CACHE, local_dtype="float32"))
    yield engine
    engine.close()


def alone(engine: LocalEngine, prompt: str, **kwargs: object) -> LocalResult:
    return engine.generate(chat(prompt), **kwargs).wait(timeout=120)


def assert_same_answer(first: LocalResult, second: LocalResult) -> None:
    assert first.text == second.text and first.finish_reason == second.finish_reason
    assert first.tokens_out == second.tokens_out
    assert first.logprobs == pytest.approx(second.logprobs, abs=1e-3)


def test_batched_greedy_answers_equal_single_stream_answers(engine: LocalEngine) -> None:
    single = [alone(engine, prompt, max_new_tokens=20, temperature=0.0) for prompt in PROMPTS]
    batch = [engine.generate(chat(prompt), max_new_tokens=20, temperature=0.0) for prompt in PROMPTS]
    for expected, generation in zip(single, batch, strict=True):
        assert_same_answer(expected, generation.wait(timeout=120))
    assert engine.peak_batch_size >= 2


def test_same_seed_samples_the_same_answer_alone_and_in_a_batch(engine: LocalEngine) -> None:
    expected = alone(engine, "Name a fruit.", max_new_tokens=16, temperature=0.9, top_p=0.9, seed=11)
    others = [engine.generate(chat(p), max_new_tokens=16, temperature=0.7, seed=i) for i, p in enumerate(PROMPTS)]
    batched = engine.generate(chat("Name a fruit."), max_new_tokens=16, temperature=0.9, top_p=0.9, seed=11)
    assert_same_answer(expected, batched.wait(timeout=120))
    for other in others:
        other.wait(timeout=120)


def test_a_request_joins_a_running_batch_without_waiting_for_it_to_drain(engine: LocalEngine) -> None:
    long_prompt = "Count from 1 to 100, separated by commas."
    short_expected = alone(engine, "Name a fruit.", max_new_tokens=8, temperature=0.0)
    # no repetition penalty: with the default (1.2) counting stops after a few numbers, before the short one joins
    long_running = engine.generate(chat(long_prompt), max_new_tokens=120, temperature=0.0, repetition_penalty=1.0)
    stream = iter(long_running)
    for _ in range(5):
        next(stream)
    joined = engine.generate(chat("Name a fruit."), max_new_tokens=8, temperature=0.0)
    assert_same_answer(short_expected, joined.wait(timeout=120))
    assert not long_running.finished, "the short request had to wait for the long one"
    rest = "".join(stream)
    result = long_running.wait(timeout=120)
    assert result.tokens_out > 20 and result.text.endswith(rest)


def test_stopping_one_request_leaves_the_others_untouched(engine: LocalEngine) -> None:
    expected = alone(engine, PROMPTS[2], max_new_tokens=24, temperature=0.0)
    doomed = engine.generate(chat("Count to one hundred."), max_new_tokens=200, temperature=0.0)
    survivor = engine.generate(chat(PROMPTS[2]), max_new_tokens=24, temperature=0.0)
    for _ in doomed:
        doomed.stop()
    assert doomed.result.finish_reason == "stopped" and doomed.result.tokens_out < 200
    assert_same_answer(expected, survivor.wait(timeout=120))


def test_concurrent_streams_each_carry_their_own_text_and_token_statistics(engine: LocalEngine) -> None:
    generations = [engine.generate(chat(p), max_new_tokens=24, seed=i) for i, p in enumerate(PROMPTS)]
    streamed: dict[int, str] = {}

    def read(index: int, generation: Generation) -> None:
        streamed[index] = "".join(generation)

    readers = [threading.Thread(target=read, args=pair) for pair in enumerate(generations)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=120)
    for index, generation in enumerate(generations):
        result = generation.result
        assert streamed[index] == result.text and result.text
        assert result.tokens_out == len(result.logprobs) == len(result.entropies) > 0
        assert all(lp <= 0 for lp in result.logprobs) and all(h >= 0 for h in result.entropies)
        assert result.tokens_in > 0 and result.latency_ms >= result.ttft_ms > 0


def test_batch_size_bound_holds_and_every_request_is_served() -> None:
    engine = LocalEngine(Settings(model_cache_dir=MODEL_CACHE, max_batch_size=2))
    try:
        generations = [engine.generate(chat(p), max_new_tokens=6, temperature=0.0) for p in PROMPTS]
        results = [generation.wait(timeout=120) for generation in generations]
    finally:
        engine.close()
    assert engine.peak_batch_size == 2
    assert all(result.tokens_out > 0 for result in results)


def test_a_conversation_over_the_memory_bound_gets_a_clear_error() -> None:
    engine = LocalEngine(Settings(model_cache_dir=MODEL_CACHE, max_batch_tokens=64))
    try:
        with pytest.raises(RequestTooLarge, match="shorten the prompt"):
            engine.generate(chat("word " * 100), max_new_tokens=8).wait(timeout=60)
        assert engine.generate(chat("Hi"), max_new_tokens=4).wait(timeout=60).tokens_out > 0
    finally:
        engine.close()
