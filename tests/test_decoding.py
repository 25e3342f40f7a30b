"""Decoding defaults that keep the bundled model readable: the penalties themselves, and that the
decoding parameters reach every local engine and the cloud stand-in (over real HTTP) and are stored
with each answer."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from pydantic import ValidationError
from sqlalchemy import select

from db.models import Answer
from db.session import session_scope
from feedback.repetition import repetition
from playground.engine.cloud import CloudClient
from playground.engine.llamacpp import LlamaCppEngine
from playground.engine.llamacpp_server import llama_servers_running
from playground.engine.model_store import resolve_model
from playground.engine.sampling import Decoding, banned_tokens, choose_tokens, penalize
from playground.engine.served import ServedEngine
from playground.handoff.policies import NeverPolicy
from playground.runtime import local_engine
from playground.settings import Settings
from tests.conftest import MODEL_CACHE, free_port
from tests.faultproxy import FaultProxy
from tests.handoff_helpers import comparison, event_with_participant, fast, run_turn, store

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer clearly and concisely."}
# Greedy with no penalty, the bundled model writes one couplet again and again for this prompt.
LOOPING = [SYSTEM, {"role": "user", "content": "Write a poem where every line is 'I love tea'."}]
OLD = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}  # the decoding before issue 14


# --- the penalties ----------------------------------------------------------------------------------
def test_banned_tokens_are_those_that_would_repeat_an_ngram_of_the_answer() -> None:
    assert banned_tokens([5, 6, 7, 5, 6], 3) == [7]  # "5 6" was followed by 7: 5 6 7 may not come again
    assert banned_tokens([5, 6, 5, 8, 5], 2) == [6, 8]
    assert banned_tokens([5, 6, 7], 0) == [] and banned_tokens([5], 3) == []
    assert banned_tokens([4, 4, 9], 1) == [4, 9]


def test_the_repetition_penalty_lowers_only_the_answers_own_tokens_and_leaves_the_input_alone() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, 3.0], [2.0, -2.0, 1.0, 3.0]])
    before = logits.clone()
    out = penalize(logits, [[0, 1], []], [Decoding(8, 0.0, 1.0, 2.0), Decoding(8, 0.0, 1.0, 2.0)])
    assert torch.equal(logits, before)
    assert out[0].tolist() == [1.0, -4.0, 1.0, 3.0]  # positive divided, negative multiplied (CTRL)
    assert out[1].tolist() == before[1].tolist()  # nothing generated yet: nothing to penalise
    assert penalize(logits, [[0, 1]], [Decoding(8, 0.0, 1.0)]) is logits  # 1.0 and no ban: nothing to copy


def test_greedy_choice_follows_the_ban_but_reports_the_models_own_log_prob() -> None:
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0]])
    raw = torch.log_softmax(logits, dim=-1)[0]
    free, free_lp, _ = choose_tokens(logits, [Decoding(8, 0.0, 1.0)], [None], [[0, 3, 0]])
    banned, banned_lp, entropies = choose_tokens(
        logits, [Decoding(8, 0.0, 1.0, no_repeat_ngram_size=2)], [None], [[0, 0, 3, 0]]
    )
    assert free == [0] and banned == [1]  # "0 0" and "0 3" were written: neither 0 nor 3 may follow 0
    assert free_lp[0] == pytest.approx(float(raw[0])) and banned_lp[0] == pytest.approx(float(raw[1]))
    assert entropies[0] == pytest.approx(float(-(raw.exp() * raw).sum()))


def test_decoding_defaults_come_from_the_one_settings_object_and_are_checked() -> None:
    settings = Settings(repetition_penalty=1.3, no_repeat_ngram_size=5, max_new_tokens=100)
    decoding = Decoding.from_settings(settings, temperature=0.0, top_p=None)
    assert decoding == Decoding(100, 0.0, settings.top_p, 1.3, 5)
    assert decoding.record(no_repeat_ngram_size=True)["no_repeat_ngram_size"] is None
    assert Settings().repetition_penalty > 1.0  # on by default: the bundled model loops without it
    with pytest.raises(ValidationError, match="repetition_penalty"):
        Settings(repetition_penalty=0.5)
    with pytest.raises(ValidationError, match="max_new_tokens"):
        Settings(max_new_tokens=0)


def test_only_a_small_model_served_like_the_stand_in_gets_our_decoding() -> None:
    standin = CloudClient(Settings(repetition_penalty=1.25, temperature=0.0, max_new_tokens=64))
    config = json.loads(standin.request_options()["extra_body"]["generation_config"])
    assert config == {"max_new_tokens": 64, "do_sample": False, "repetition_penalty": 1.25, "no_repeat_ngram_size": 0}
    assert standin.decoding["repetition_penalty"] == 1.25
    real = CloudClient(Settings(openai_api_key="sk-test", max_new_tokens=64))
    assert real.request_options() == {} and real.decoding == {"max_new_tokens": 64}


# --- each engine, on the real bundled model ----------------------------------------------------------
def _greedy(engine: object, **decoding: object) -> tuple[str, dict]:
    result = engine.generate(LOOPING, temperature=0.0, max_new_tokens=160, **decoding).wait(timeout=900)
    return result.text, result.decoding


@pytest.mark.slow
def test_the_transformers_engine_applies_and_records_the_penalties() -> None:
    engine = local_engine(Settings(model_cache_dir=MODEL_CACHE, local_dtype="float32"))  # greedy text: a fixed dtype
    looping, old = _greedy(engine, **OLD)
    readable, new = _greedy(engine)  # the settings' defaults
    assert repetition(looping).looped, looping
    assert not repetition(readable).looped, readable
    assert old == {**Decoding.from_settings(engine.settings, temperature=0.0, max_new_tokens=160).record(), **OLD}
    assert new == Decoding.from_settings(engine.settings, temperature=0.0, max_new_tokens=160).record()
    banned, record = _greedy(engine, repetition_penalty=1.0, no_repeat_ngram_size=3)
    assert record["no_repeat_ngram_size"] == 3
    ids = engine.tokenizer.encode(banned, add_special_tokens=False)
    trigrams = [tuple(ids[i : i + 3]) for i in range(len(ids) - 2)]
    assert len(trigrams) == len(set(trigrams)) > 10


@pytest.mark.slow
def test_the_llama_cpp_engine_applies_and_records_the_penalties() -> None:
    engine = LlamaCppEngine(Settings(local_engine="llamacpp", model_cache_dir=MODEL_CACHE, llamacpp_n_ctx=2048))
    try:
        looping, _ = _greedy(engine, **OLD)
        readable, new = _greedy(engine)
    finally:
        engine.close()
    assert repetition(looping).looped, looping
    assert not repetition(readable).looped, readable
    assert new["repetition_penalty"] == Settings().repetition_penalty


@pytest.fixture(scope="module")
def llama_server_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, FaultProxy]]:
    """llama.cpp's server on the bundled GGUF, behind a recording proxy (real HTTP both ways)."""
    port = free_port()
    upstream = Settings(
        local_engine="openai",
        local_base_url=f"http://127.0.0.1:{port}/v1",
        llamacpp_servers=1,
        model_cache_dir=MODEL_CACHE,
    )
    with llama_servers_running(upstream, tmp_path_factory.mktemp("llama")), FaultProxy("127.0.0.1", port) as proxy:
        yield upstream.model_copy(update={"local_base_url": proxy.base_url}), proxy


@pytest.mark.slow
def test_the_served_engine_sends_the_penalty_to_llama_cpps_server(llama_server_proxy) -> None:
    settings, proxy = llama_server_proxy
    engine = ServedEngine(settings)
    engine.warm_up()
    looping, old = _greedy(engine, **OLD)
    readable, new = _greedy(engine, repetition_penalty=1.3)
    sent = [json.loads(body) for body in proxy.bodies if b'"stream"' in body]
    assert [b["repeat_penalty"] for b in sent[-2:]] == [1.0, 1.3]  # llama.cpp's own default is 1.1: always sent
    assert looping != readable
    assert old["repetition_penalty"] == 1.0 and new["repetition_penalty"] == 1.3
    assert new["no_repeat_ngram_size"] is None  # not an option of the server: recorded as not applied
    engine.close()


@pytest.fixture
def standin_proxy(standin: Settings) -> Iterator[FaultProxy]:
    with FaultProxy(standin.standin_host, standin.standin_port) as proxy:
        yield proxy


@pytest.mark.slow
def test_the_stand_in_gets_the_decoding_through_the_real_openai_client(
    standin: Settings, standin_proxy: FaultProxy
) -> None:
    def ask(**decoding: object) -> tuple[str, dict]:
        settings = standin.model_copy(
            update={
                "cloud_base_url": standin_proxy.base_url,
                "cloud_model": resolve_model(standin.local_model, standin.model_cache_dir),
                "cloud_local_decoding": True,
                "cloud_timeout_s": 300.0,
                "temperature": 0.0,
                "max_new_tokens": 160,
                **decoding,
            }
        )
        result = CloudClient(settings).generate(LOOPING).wait()
        assert result.ok, result.error
        return result.text, result.decoding

    looping, _ = ask(**OLD)
    readable, stored = ask()
    configs = [json.loads(json.loads(body)["generation_config"]) for body in standin_proxy.bodies]
    assert [c["repetition_penalty"] for c in configs] == [1.0, standin.repetition_penalty]
    assert configs[-1]["max_new_tokens"] == 160 and configs[-1]["do_sample"] is False
    assert stored == Decoding.from_settings(standin, temperature=0.0, max_new_tokens=160).record()
    assert repetition(looping).looped, looping
    assert not repetition(readable).looped, readable


@pytest.mark.slow
def test_each_answer_is_stored_with_its_decoding(standin: Settings, sqlite_url: str) -> None:
    settings = fast(standin)
    _, finished = run_turn(comparison(settings, NeverPolicy(), 0.5), "Name a colour.")
    _, participant = event_with_participant(sqlite_url)
    store(sqlite_url, participant, finished)
    with session_scope(sqlite_url) as session:
        stored = {a.arm: a.decoding for a in session.scalars(select(Answer))}
    expected = Decoding.from_settings(settings).record()
    assert stored == {"off": expected, "on": expected}
