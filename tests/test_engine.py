"""The real bundled model and the real cloud stand-in."""

from __future__ import annotations

import pytest

from playground.engine.cloud import CloudClient
from playground.handoff.signals import token_signals
from playground.runtime import local_engine
from playground.settings import Settings
from tests.conftest import MODEL_CACHE, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    return local_engine(Settings(model_cache_dir=MODEL_CACHE))


def test_local_engine_streams_an_answer_with_per_token_logprobs(engine) -> None:
    generation = engine.generate(
        [{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=24, seed=7
    )
    deltas = list(generation)
    result = generation.result
    assert "".join(deltas) == result.text and "Paris" in result.text
    assert result.tokens_out == len(result.logprobs) == len(result.entropies) > 0
    assert all(lp <= 0 for lp in result.logprobs)
    assert result.ttft_ms > 0 and result.latency_ms >= result.ttft_ms
    stats = token_signals(result.logprobs, result.entropies)
    assert stats["min_logprob"] <= stats["p10_logprob"] <= stats["p25_logprob"] <= 0
    assert stats["max_entropy"] >= stats["mean_entropy"] >= 0


def test_same_seed_gives_the_same_answer(engine) -> None:
    messages = [{"role": "user", "content": "Name a fruit."}]
    first = engine.generate(messages, max_new_tokens=12, seed=3).wait()
    second = engine.generate(messages, max_new_tokens=12, seed=3).wait()
    assert first.text == second.text and first.logprobs == second.logprobs


def test_stopping_a_generation_ends_it_early(engine) -> None:
    generation = engine.generate([{"role": "user", "content": "Count to one hundred."}], max_new_tokens=200)
    for _ in generation:
        generation.stop()
    result = generation.result
    assert result.finish_reason == "stopped" and result.tokens_out < 200


def test_cloud_client_streams_from_the_real_standin(standin: Settings) -> None:
    stream = CloudClient(standin).generate([{"role": "user", "content": "Say hello."}])
    deltas = list(stream)
    result = stream.result
    assert result.ok and result.text == "".join(deltas) and len(deltas) > 1
    assert result.base_url_host == f"127.0.0.1:{standin.standin_port}"
    assert result.tokens_out and result.ttft_ms is not None


def test_cloud_connection_refused_is_recorded_not_raised() -> None:
    settings = Settings(model_cache_dir=MODEL_CACHE, standin_port=free_port(), cloud_max_retries=0)
    result = CloudClient(settings).generate([{"role": "user", "content": "Hi"}]).wait()
    assert result.error_kind == "connection" and result.text == ""
