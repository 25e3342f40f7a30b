"""llama.cpp's batched decode of the bundled GGUF: the yardstick for our engine's aggregate tokens/s.

Bench-only: ``pip install '.[bench]'`` (llama-cpp-python builds from source, ~4 min on 2 cores).
Uses the low-level API the way llama.cpp's ``batched`` example does: one context with a sequence per
prompt, all prompts prefilled in one ``llama_decode``, then one token per live sequence per step,
greedy. Prompts are tokenized with the engine's tokenizer (the GGUF's own vocabulary, converted), so
both sides see the same token ids.
"""

from __future__ import annotations

import ctypes
import time

import numpy as np

from feedback.cpus import usable_cpus
from playground.engine.llamacpp_server import served_gguf
from playground.engine.model_store import resolve_model
from playground.settings import BUNDLED_MODEL, Settings


class LlamaCppMissing(RuntimeError):
    """llama-cpp-python is a bench-only extra; the message says how to install it."""


def _quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    return None


def batched_tokens_per_s(chats: list[list[dict[str, str]]], max_new_tokens: int) -> float:
    """Aggregate tokens/s generating greedily for all chats at once (prefill included)."""
    return batched_run(chats, max_new_tokens)[0]


def batched_run(
    chats: list[list[dict[str, str]]], max_new_tokens: int, threads: int | None = None
) -> tuple[float, float]:
    """(aggregate tokens/s, seconds to the first tokens) generating greedily for all chats at once."""
    try:
        import llama_cpp
    except ImportError:
        raise LlamaCppMissing(
            "llama-cpp-python is not installed, so the llama.cpp comparison cannot run: "
            "`.venv/bin/pip install '.[bench]'` (builds from source, ~4 min), then run the benchmark again."
        ) from None
    from transformers import AutoTokenizer

    settings = Settings()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(BUNDLED_MODEL, settings.model_cache_dir))
    prompts = [
        tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"] for chat in chats
    ]
    callback = llama_cpp.llama_log_callback(_quiet)  # keep a reference while llama.cpp may call it
    llama_cpp.llama_log_set(callback, ctypes.c_void_p())
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(  # the file the default engine serves (a Q8_0 copy of the Q4_1)
        str(served_gguf(settings)).encode(), llama_cpp.llama_model_default_params()
    )
    params = llama_cpp.llama_context_default_params()
    sequences = len(prompts)
    per_sequence = -(-(max(map(len, prompts)) + max_new_tokens + 8) // 256) * 256
    params.n_seq_max = sequences
    params.n_ctx = per_sequence * sequences
    params.n_batch = -(-max(sum(map(len, prompts)), sequences) // 256) * 256
    params.n_ubatch = min(params.n_batch, 512)
    params.kv_unified = True  # one buffer for all sequences, as llama.cpp's batched example sets
    params.n_threads = params.n_threads_batch = threads or usable_cpus()
    context = llama_cpp.llama_init_from_model(model, params)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
    try:
        started = time.perf_counter()
        entries = [
            (seq, pos, token, pos == len(ids) - 1) for seq, ids in enumerate(prompts) for pos, token in enumerate(ids)
        ]
        positions = [len(ids) for ids in prompts]
        live = list(range(sequences))
        generated = 0
        first_s = 0.0
        for _ in range(max_new_tokens):
            _fill(batch, entries)
            if llama_cpp.llama_decode(context, batch) != 0:
                raise RuntimeError("llama_decode failed")
            outputs = [i for i, entry in enumerate(entries) if entry[3]]
            first_s = first_s or time.perf_counter() - started
            entries, still_live = [], []
            for seq, output in zip(live, outputs, strict=True):
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(context, output), shape=(n_vocab,))
                token = int(logits.argmax())
                generated += 1
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    continue
                entries.append((seq, positions[seq], token, True))
                positions[seq] += 1
                still_live.append(seq)
            live = still_live
            if not live:
                break
        return generated / (time.perf_counter() - started), first_s
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(context)
        llama_cpp.llama_model_free(model)


def _fill(batch, entries: list[tuple[int, int, int, bool]]) -> None:  # noqa: ANN001 - a ctypes struct
    batch.n_tokens = len(entries)
    for i, (seq, pos, token, wants_logits) in enumerate(entries):
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = wants_logits
