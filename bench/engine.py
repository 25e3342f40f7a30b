"""Local engine throughput, latency and memory, each against a baseline measured in the same run.

    python -m bench.engine                                         # bundled SmolLM2 on the CPU
    python -m bench.engine --device cuda --model openai/gpt-oss-20b  # on a GPU machine

Figures: one stream through our engine (streaming + log-prob capture) vs a bare ``model.generate``
loop on the same prompts, interleaved prompt by prompt so background load hits both alike; 16
requests arriving together (aggregate tokens/s, and llama.cpp's batched decode of the same GGUF);
16 sessions arriving as a Poisson process, each sending a follow-up after a pause (time to first
token, starvation); peak resident memory with the engine warm and 16 requests in flight.
"""

from __future__ import annotations

import argparse
import random
import threading
import time

import torch

from bench.common import PeakMemory, Target, percentile, report
from bench.prompts import chats
from playground.engine.contract import Generation
from playground.engine.local import LocalEngine
from playground.settings import BUNDLED_MODEL, Settings

NEW_TOKENS = 128
BATCH = 16
SINGLE_PROMPTS = 4
STARVED_TTFT_S = 5.0


class DeviceUnavailable(SystemExit):
    """The requested accelerator is not on this machine."""


def settings_for(device: str, model: str) -> Settings:
    """Engine settings for the benchmark; refuses a CUDA run on a machine without a GPU."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"--device {device} needs an NVIDIA GPU with a CUDA build of torch, and this machine has none "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False). Run this command on a GPU "
            "machine, or drop --device/--model to benchmark the bundled model on the CPU."
        )
    return Settings(local_model=model, local_device=device, max_batch_size=BATCH)


def _tokens_per_s(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


def single_stream(engine: LocalEngine, prompts: list[list[dict[str, str]]]) -> tuple[float, float]:
    """(bare generate tokens/s, engine tokens/s) over the same prompts, greedy, interleaved."""
    model, tokenizer = engine.model, engine.tokenizer
    bare_tokens = bare_s = engine_tokens = engine_s = 0.0
    for messages in prompts:
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(engine.device)
        started = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        bare_s += time.perf_counter() - started
        bare_tokens += output.shape[1] - inputs["input_ids"].shape[1]

        started = time.perf_counter()
        generation = engine.generate(messages, max_new_tokens=NEW_TOKENS, temperature=0.0)
        for _ in generation:  # streaming, as the page consumes it
            pass
        engine_s += time.perf_counter() - started
        engine_tokens += generation.result.tokens_out
    return _tokens_per_s(int(bare_tokens), bare_s), _tokens_per_s(int(engine_tokens), engine_s)


def _drain(generations: list[Generation]) -> None:
    readers = [threading.Thread(target=lambda g=g: [None for _ in g]) for g in generations]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()


def together(engine: LocalEngine, prompts: list[list[dict[str, str]]]) -> tuple[float, float]:
    """(aggregate tokens/s, peak GiB) with all prompts submitted at once and streamed by readers."""
    with PeakMemory() as memory:
        started = time.perf_counter()
        generations = [engine.generate(m, max_new_tokens=NEW_TOKENS, temperature=0.0) for m in prompts]
        _drain(generations)
        elapsed = time.perf_counter() - started
    return _tokens_per_s(sum(g.result.tokens_out for g in generations), elapsed), memory.peak_gb


def staggered(engine: LocalEngine, sessions: int, mean_gap_s: float, seed: int = 7) -> list[float]:
    """Time to first token (s) of every request: sessions arrive as a Poisson process, each sends a
    first prompt, reads the streamed answer, pauses (exponential think time) and sends a follow-up."""
    rng = random.Random(seed)
    prompts = chats(sessions * 2)
    arrivals = []
    clock = 0.0
    for _ in range(sessions):
        clock += rng.expovariate(1 / mean_gap_s)
        arrivals.append(clock)
    pauses = [rng.expovariate(1 / mean_gap_s) for _ in range(sessions)]
    ttfts: list[float] = []
    lock = threading.Lock()
    started = time.perf_counter()

    def session(index: int) -> None:
        time.sleep(max(0.0, started + arrivals[index] - time.perf_counter()))
        for turn in range(2):
            generation = engine.generate(prompts[2 * index + turn], max_new_tokens=NEW_TOKENS, seed=index)
            for _ in generation:
                pass
            with lock:
                ttfts.append(generation.result.ttft_ms / 1000)
            time.sleep(pauses[index])

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return ttfts + [float("inf")] * (2 * sessions - len(ttfts))


def main(argv: list[str] | None = None) -> list[Target]:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--model", default=BUNDLED_MODEL, help="model id or path (default: the bundled SmolLM2)")
    args = parser.parse_args(argv if argv is not None else [])
    import streamlit  # noqa: F401 - resident as in the app process, so the memory figure includes it

    engine = LocalEngine(settings_for(args.device, args.model))
    started = time.perf_counter()
    engine.warm_up()
    print(
        f"engine: {engine.model_name} on {args.device}, loaded in {engine.load_seconds:.1f} s, "
        f"warm-up {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    bare, single = single_stream(engine, chats(SINGLE_PROMPTS))
    print(f"one stream: bare generate {bare:.1f} tok/s, engine {single:.1f} tok/s", flush=True)
    aggregate, peak_gb = together(engine, chats(BATCH))
    print(
        f"{BATCH} together: {aggregate:.1f} tok/s aggregate ({aggregate / single:.2f}x one stream), "
        f"peak RSS {peak_gb:.2f} GiB",
        flush=True,
    )
    targets = [
        Target("engine overhead: one stream vs bare generate", single / bare, 0.95, "x"),
        Target(f"{BATCH} together: aggregate vs one stream", aggregate / single, 6.0, "x"),
    ]
    if args.model == BUNDLED_MODEL and args.device == "cpu":
        from bench.llama_cpp_baseline import LlamaCppMissing, batched_tokens_per_s

        try:
            llama = batched_tokens_per_s(chats(BATCH), NEW_TOKENS)
        except LlamaCppMissing as missing:
            print(missing, flush=True)
            llama = float("inf")
        print(f"llama.cpp batched, same GGUF: {llama:.1f} tok/s aggregate", flush=True)
        targets.append(
            Target(
                f"{BATCH} together: aggregate vs llama.cpp batched",
                aggregate / llama,
                1.0,
                "x",
                why="this is the transformers engine (GPUs, any Hugging Face model); on a CPU `auto` picks llama.cpp's "
                "server, measured against the same loop in bench.engines",
            )
        )

    ttfts = staggered(engine, sessions=BATCH, mean_gap_s=0.5)
    starved = sum(t > STARVED_TTFT_S for t in ttfts)
    print(
        f"staggered: {len(ttfts)} requests, TTFT p50 {percentile(ttfts, 50):.3f} s, "
        f"p95 {percentile(ttfts, 95):.3f} s, max {max(ttfts):.3f} s, peak batch {engine.peak_batch_size}",
        flush=True,
    )
    targets += [
        Target(f"{BATCH} staggered sessions: p95 time to first token", percentile(ttfts, 95), 1.0, " s", False),
        Target(
            f"{BATCH} staggered sessions: starved requests (TTFT > {STARVED_TTFT_S:g} s or unfinished)",
            starved,
            0,
            "",
            False,
        ),
        Target(f"peak memory, engine warm + {BATCH} in flight", peak_gb, 3.0, " GiB", False),
    ]
    engine.close()
    return targets


if __name__ == "__main__":
    import sys

    report(main(sys.argv[1:]))
