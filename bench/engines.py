"""The local engines side by side on the bundled model, in one run on this machine.

    python -m bench.engines                    # transformers, llamacpp in process, openai on llama.cpp's server
    python -m bench.engines --new-tokens 32    # shorter answers (a quick look)

For each engine (``HANDOFF_LOCAL_ENGINE``): one stream (tokens/s counted from submit to the last
token, so prefill is included, and time to first token), then 4 and 16 requests submitted together
(aggregate tokens/s, p95 time to first token). The ``openai`` engine talks to llama.cpp's server
started here on a free port with log-probs on (``logits_all``), as ``handoff serve`` starts it.
llama.cpp's own greedy loop on the same GGUF (``bench/llama_cpp_baseline.py``, no log-probs) is the
yardstick for the in-process llama.cpp engine's decode loop. Greedy decoding throughout.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import Target, machine, percentile, report
from bench.prompts import chats
from playground.engine.contract import LocalModelEngine
from playground.engine.engines import load_engine
from playground.settings import Settings

SINGLE_PROMPTS = 4
CONCURRENCY = (4, 16)


@dataclass
class Figures:
    tokens_per_s: float
    ttft_p50_s: float
    ttft_p95_s: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(engine: LocalModelEngine, prompts: list[list[dict[str, str]]], new_tokens: int) -> Figures:
    """All prompts submitted at once, each streamed by its own reader, as sessions do."""
    started = time.perf_counter()
    generations = [engine.generate(m, max_new_tokens=new_tokens, temperature=0.0) for m in prompts]
    readers = [threading.Thread(target=lambda g=g: [None for _ in g]) for g in generations]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    elapsed = time.perf_counter() - started
    results = [g.wait() for g in generations]
    ttfts = [r.ttft_ms / 1000 for r in results]
    tokens = sum(r.tokens_out for r in results)
    return Figures(tokens / elapsed, percentile(ttfts, 50), percentile(ttfts, 95))


def single_stream(engine: LocalModelEngine, new_tokens: int) -> Figures:
    """One request at a time over a few prompts: tokens/s over all of them, TTFT p50/p95."""
    tokens = 0
    seconds = 0.0
    ttfts = []
    for messages in chats(SINGLE_PROMPTS):
        started = time.perf_counter()
        generation = engine.generate(messages, max_new_tokens=new_tokens, temperature=0.0)
        for _ in generation:
            pass
        seconds += time.perf_counter() - started
        result = generation.wait()
        tokens += result.tokens_out
        ttfts.append(result.ttft_ms / 1000)
    return Figures(tokens / seconds, percentile(ttfts, 50), percentile(ttfts, 95))


def measure(engine: LocalModelEngine, name: str, new_tokens: int) -> dict[int, Figures]:
    engine.warm_up()
    figures = {1: single_stream(engine, new_tokens)}
    for n in CONCURRENCY:
        figures[n] = _run(engine, chats(n), new_tokens)
    for n, f in figures.items():
        print(
            f"{name:<34} {n:>2} at once: {f.tokens_per_s:7.1f} tok/s, TTFT p50 {f.ttft_p50_s:6.3f} s, "
            f"p95 {f.ttft_p95_s:6.3f} s",
            flush=True,
        )
    return figures


def main(argv: list[str] | None = None) -> list[Target]:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per answer (default 64)")
    args = parser.parse_args(argv if argv is not None else [])
    new_tokens = args.new_tokens
    print(f"machine: {machine()}; {new_tokens} new tokens per answer, greedy", flush=True)
    base = Settings(max_batch_size=max(CONCURRENCY), max_new_tokens=new_tokens)
    results: dict[str, dict[int, Figures]] = {}

    engine = load_engine(base.model_copy(update={"local_engine": "transformers"}))
    results["transformers"] = measure(engine, f"transformers ({engine.dtype})", new_tokens)
    engine.close()

    engine = load_engine(base.model_copy(update={"local_engine": "llamacpp"}))
    results["llamacpp"] = measure(engine, f"llamacpp in process ({engine.dtype})", new_tokens)
    engine.close()

    from bench.llama_cpp_baseline import batched_tokens_per_s
    from playground.engine.llamacpp_server import start_llama_server

    bare_single = sum(batched_tokens_per_s(chats(SINGLE_PROMPTS)[i : i + 1], new_tokens) for i in range(2)) / 2
    bare_batched = batched_tokens_per_s(chats(max(CONCURRENCY)), new_tokens)
    print(
        f"{'llama.cpp bare greedy loop':<34}  1 at once: {bare_single:7.1f} tok/s; "
        f"{max(CONCURRENCY)} at once: {bare_batched:7.1f} tok/s",
        flush=True,
    )

    served = base.model_copy(update={"local_engine": "openai", "local_base_url": f"http://127.0.0.1:{free_port()}/v1"})
    with tempfile.TemporaryDirectory() as folder:
        server = start_llama_server(served, Path(folder) / "llama_server.log")
        try:
            engine = load_engine(served)
            results["openai"] = measure(engine, "openai -> llama.cpp server (logprobs)", new_tokens)
            engine.close()
        finally:
            server.terminate()
            server.wait(timeout=10)

    t, llama, openai = results["transformers"], results["llamacpp"], results["openai"]
    top = max(CONCURRENCY)
    return [
        Target(
            "engines: llamacpp one stream vs transformers one stream",
            llama[1].tokens_per_s / t[1].tokens_per_s,
            2.0,
            "x",
        ),
        Target(
            "engines: llamacpp one stream vs llama.cpp's bare loop (log-prob + entropy cost)",
            llama[1].tokens_per_s / bare_single,
            0.9,
            "x",
        ),
        Target(
            f"engines: llamacpp {top} together vs llama.cpp's bare batched loop",
            llama[top].tokens_per_s / bare_batched,
            1.0,
            "x",
        ),
        Target(
            f"engines: llamacpp {top} together vs one stream", llama[top].tokens_per_s / llama[1].tokens_per_s, 2.0, "x"
        ),
        Target(
            "engines: openai on llama.cpp's server (log-probs) one stream vs llamacpp in process",
            openai[1].tokens_per_s / llama[1].tokens_per_s,
            0.5,
            "x",
        ),
        Target("engines: llamacpp one-stream time to first token", llama[1].ttft_p50_s, 0.25, " s", False),
        Target(f"engines: llamacpp {top} together p95 time to first token", llama[top].ttft_p95_s, 1.0, " s", False),
        Target(
            "engines: openai (llama.cpp server) one-stream time to first token", openai[1].ttft_p50_s, 0.5, " s", False
        ),
        Target("engines: transformers one-stream time to first token", t[1].ttft_p50_s, 0.5, " s", False),
    ]


if __name__ == "__main__":
    import sys

    report(main(sys.argv[1:]))
