"""Why the engine batches on its own: our padded dynamic batch vs transformers' continuous batching.

    python -m bench.batching_choice

Same model, same 16 MT-Bench prompts, greedy, 128 new tokens, all submitted at once: aggregate
tokens/s and peak resident memory of our ``LocalEngine`` vs ``model.generate_batch`` (transformers'
continuous batching, paged cache sized with ``num_blocks`` / ``max_batch_tokens`` so it does not
claim gigabytes on a CPU). The engine keeps the design that wins here; the target line says so.
"""

from __future__ import annotations

import statistics
import time

import torch
from transformers import ContinuousBatchingConfig, GenerationConfig

from bench.common import PeakMemory, Target, report
from bench.engine import BATCH, NEW_TOKENS, together
from bench.prompts import chats
from playground.engine.local import LocalEngine
from playground.settings import Settings

PAGE_SIZE = 256


def continuous_batching(engine: LocalEngine, prompts: list[list[dict[str, str]]]) -> tuple[float, float]:
    """(aggregate tokens/s, peak GiB) of transformers' ``generate_batch`` on the engine's model."""
    inputs = [
        engine.tokenizer.apply_chat_template(m, add_generation_prompt=True, return_dict=True)["input_ids"]
        for m in prompts
    ]
    longest = max(map(len, inputs)) + NEW_TOKENS
    config = ContinuousBatchingConfig(
        page_size=PAGE_SIZE,
        num_blocks=len(inputs) * -(-longest // PAGE_SIZE) + 4,
        max_batch_tokens=sum(map(len, inputs)),
    )
    generation = GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=sorted(engine.eos_ids))
    with PeakMemory() as memory, torch.inference_mode():
        started = time.perf_counter()
        outputs = engine.model.generate_batch(
            inputs, generation_config=generation, continuous_batching_config=config, warmup=False
        )
        elapsed = time.perf_counter() - started
    tokens = sum(len(output.generated_tokens) for output in outputs.values())
    return tokens / elapsed, memory.peak_gb


def main() -> list[Target]:
    engine = LocalEngine(Settings(max_batch_size=BATCH))
    engine.warm_up()
    continuous_batching(engine, chats(2))  # its own warm-up, off the clock
    # Two rounds in alternating order, so a burst of background load hits both sides alike.
    measure = {
        "ours": lambda: together(engine, chats(BATCH)),
        "theirs": lambda: continuous_batching(engine, chats(BATCH)),
    }
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "theirs": []}
    for order in (("ours", "theirs"), ("theirs", "ours")):
        for side in order:
            runs[side].append(measure[side]())
    ours, theirs = runs["ours"], runs["theirs"]
    ours_tps, ours_gb = statistics.median(t for t, _ in ours), max(gb for _, gb in ours)
    theirs_tps, theirs_gb = statistics.median(t for t, _ in theirs), max(gb for _, gb in theirs)
    engine.close()
    print(
        f"{BATCH} together, median of 2: our padded batch {ours_tps:.1f} tok/s (peak {ours_gb:.2f} GiB), "
        f"transformers continuous batching {theirs_tps:.1f} tok/s (peak {theirs_gb:.2f} GiB); runs: ours "
        f"{[round(t, 1) for t, _ in ours]}, theirs {[round(t, 1) for t, _ in theirs]}",
        flush=True,
    )
    return [
        Target(f"{BATCH} together: our batching vs transformers continuous batching", ours_tps / theirs_tps, 1.0, "x")
    ]


if __name__ == "__main__":
    report(main())
