"""The local model in process through llama.cpp (llama-cpp-python), with our own decode loop.

Concurrency model: one worker thread owns the llama.cpp context and decodes the requests of every
session together, the way llama.cpp's own server does (continuous batching). Each running request
is its own sequence in one shared KV cache (``n_seq_max`` = ``max_batch_size``, ``kv_unified``).
Each step is one ``llama_decode`` holding the newest token of every running answer and then the
prompts of joining requests, in arrival order, up to ``n_batch`` tokens; a prompt that does not fit
goes on in the next step. So requests arriving together are prefilled together, a newcomer joins
mid-decode without stalling the others for more than one step, and finished or stopped requests
free their sequence at the next step. llama.cpp's calls release the GIL (ctypes), so the app's
threads keep running while it decodes. Memory is bounded by ``llamacpp_n_ctx`` cache positions
shared by all sequences: a request reserves its prompt plus ``max_new_tokens`` and waits, in arrival
order, until they fit.

Per-token log-prob and entropy come from each sequence's last-row logits of each step over the full
vocabulary (no ``logits_all``, no second pass), and sampling, repetition penalty and n-gram ban
included, is the same code as the transformers engine's (``sampling.choose_tokens``, through
``batching``), run on one torch thread in this worker so it does not fight llama.cpp's threads. The
thread count itself is timed at start-up (``_choose_threads``). The prompt is the GGUF's own chat
template, rendered with Jinja like ``apply_chat_template``, so both engines see the same tokens.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feedback.cpus import usable_cpus
from playground.engine.batching import BatchingEngine, Row
from playground.engine.model_store import bundled_gguf, bundled_revision
from playground.settings import BUNDLED_MODEL, BUNDLED_MODEL_NAME, Settings

log = logging.getLogger(__name__)
Message = dict[str, str]
PREFILL_CHUNK = 512  # prompt tokens per llama_decode call (llama.cpp's n_batch)
INSTALL_HINT = (
    "Run `make llama-cpp`: it builds llama.cpp for this CPU, the Python binding and llama-server "
    "(`make run` and `make test` run it)."
)


class LlamaCppMissing(RuntimeError):
    """llama-cpp-python is not installed, but the configured engine needs it."""


class EngineConfigError(ValueError):
    """The engine settings point at something that cannot be loaded; the message says what to change."""


def require_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or a start-up error that says how to install it."""
    try:
        import llama_cpp
    except ImportError as error:
        raise LlamaCppMissing(
            f"HANDOFF_LOCAL_ENGINE=llamacpp needs llama-cpp-python, which is not installed ({error}). {INSTALL_HINT}"
        ) from error
    return llama_cpp


def gguf_path(settings: Settings) -> Path:
    """The GGUF file the llama.cpp engines load: the bundled one, or ``local_model`` as a path (llama-server
    runs ``llamacpp_server.served_gguf`` of it)."""
    if settings.local_model == BUNDLED_MODEL:
        return bundled_gguf()
    path = Path(settings.local_model)
    if path.suffix != ".gguf" or not path.is_file():
        raise EngineConfigError(
            f"HANDOFF_LOCAL_ENGINE=llamacpp loads a .gguf file, but HANDOFF_LOCAL_MODEL={settings.local_model!r} "
            "is not one. Point it at a GGUF file, or use HANDOFF_LOCAL_ENGINE=transformers for a Hugging Face model."
        )
    return path


class GgufChatTemplate:
    """The chat template stored in the GGUF, rendered the way ``apply_chat_template`` renders it.

    It is the engine's ``tokenizer`` as far as the policies are concerned (the ``self`` policy checks
    whether the template shows the model a tool).
    """

    def __init__(self, template: str, bos_token: str, eos_token: str) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._formatter = Jinja2ChatFormatter(template=template, bos_token=bos_token, eos_token=eos_token)

    def apply_chat_template(self, messages: list[Message], tools: list[dict[str, Any]] | None = None, **_: Any) -> str:
        return self._formatter(messages=messages, tools=tools).prompt  # type: ignore[arg-type]


@dataclass
class _Sequence(Row):
    """A request as its own sequence in the shared KV cache, with its incremental UTF-8 decoder."""

    seq_id: int = -1
    n_past: int = 0  # cache positions filled
    prompt_read: int = 0  # prompt tokens decoded so far (a long prompt takes several steps)
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))


class _Native:
    """The llama.cpp objects, freed once the worker has stopped (never while it decodes)."""

    def __init__(self, llama_cpp: Any, model: Any, context: Any, batch: Any) -> None:
        self.llama_cpp, self.model, self.context, self.batch = llama_cpp, model, context, batch

    def free(self) -> None:
        self.llama_cpp.llama_batch_free(self.batch)
        self.context.close()
        self.model.close()


class LlamaCppEngine(BatchingEngine):
    """A GGUF model in llama.cpp plus the worker thread that decodes for all sessions together."""

    kind = "llamacpp"
    gives_logprobs = True  # from each step's last-row logits, over the full vocabulary
    row_type = _Sequence
    torch_single_thread = True
    flash_attn_type = 0  # LLAMA_FLASH_ATTN_TYPE_DISABLED (see __init__)

    def __init__(self, settings: Settings) -> None:
        llama_cpp = require_llama_cpp()
        from llama_cpp import _internals, _logger

        # llama.cpp's own messages: errors only. (verbose=False below would instead swap the process's
        # stdout/stderr file descriptors while loading, hiding every other thread's output meanwhile.)
        _logger.set_verbose(False)

        self.settings = settings
        started = time.perf_counter()
        path = gguf_path(settings)
        self._llama = llama_cpp
        model = _internals.LlamaModel(path_model=str(path), params=llama_cpp.llama_model_default_params(), verbose=True)
        self.threads = settings.llamacpp_threads or usable_cpus()
        self.threads_batch = self.threads
        self.threads_reason = "set by HANDOFF_LLAMACPP_THREADS" if settings.llamacpp_threads else "every CPU"
        self.max_batch_size = min(settings.max_batch_size, llama_cpp.llama_max_parallel_sequences())
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = settings.llamacpp_n_ctx
        params.n_batch = params.n_ubatch = self.n_batch = max(PREFILL_CHUNK, self.max_batch_size)
        params.n_seq_max = self.max_batch_size
        params.kv_unified = True  # one pool of cache positions for all sequences
        # Flash attention off: with it (llama.cpp's CPU default), a llama_decode of 64 tokens or more takes a
        # tiled attention path that rounds differently, so a sequence's logits changed (up to 0.8) with the
        # number of other sequences' tokens in the same batch; without it they are bit-for-bit the same.
        params.flash_attn_type = self.flash_attn_type
        params.n_threads = params.n_threads_batch = self.threads
        self._probe_threads = not settings.llamacpp_threads and self.threads > 1
        params.no_perf = True
        context = _internals.LlamaContext(model=model, params=params, verbose=True)
        batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
        self._native = _Native(llama_cpp, model, context, batch)
        self._ctx, self._batch, self._vocab = context.ctx, batch, model.vocab
        self._memory = llama_cpp.llama_get_memory(context.ctx)
        self.n_ctx = llama_cpp.llama_n_ctx(context.ctx)
        self.n_ctx_train = model.n_ctx_train()
        self.context_limit = min(self.n_ctx, self.n_ctx_train)
        self.n_vocab = model.n_vocab()
        self.load_seconds = time.perf_counter() - started
        meta = model.metadata()
        bos, eos = model.token_bos(), model.token_eos()
        self._bos = bos if model.add_bos_token() and bos >= 0 else None
        self.tokenizer = GgufChatTemplate(
            meta.get("tokenizer.chat_template", ""),
            model.token_get_text(bos) if bos >= 0 else "",
            model.token_get_text(eos) if eos >= 0 else "",
        )
        self.dtype = model.desc().rsplit(" ", 1)[-1][:16]  # the quantisation, e.g. Q4_1
        if settings.local_model == BUNDLED_MODEL:
            self.model_name, self.model_revision = BUNDLED_MODEL_NAME, bundled_revision()
        else:
            self.model_name, self.model_revision = meta.get("general.name") or path.stem, path.name
        self._piece_buffer = ctypes.create_string_buffer(256)
        self._free_ids = list(range(self.max_batch_size))
        self._reserved = 0
        self.mixed_steps = 0  # steps that read a joining prompt along with running answers' tokens (observed)
        self._start_worker("llamacpp-engine", self._native.free)

    def prompt_ids(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The tokens the model reads for this chat (the GGUF's chat template, special tokens parsed)."""
        text = self.tokenizer.apply_chat_template(messages, tools=tools)
        ids = self._native.model.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self._bos is not None and (not ids or ids[0] != self._bos):
            ids.insert(0, self._bos)
        return ids

    # --- the worker -----------------------------------------------------------------------------
    def _on_worker_start(self) -> None:
        """torch on one thread in this worker: its token choice must not fight llama.cpp's threads for the cores.

        The log-softmax, entropy and penalties over 16 x 49,152 logits are cheap on one core, but with
        torch's intra-op threads they woke a second OpenMP pool beside llama.cpp's (separate runtimes,
        both spinning at their barriers) on the same two cores. ``torch.set_num_threads`` sets the
        calling thread's OpenMP thread count and the default for threads started later; the default is
        put back from a short-lived thread, so only this worker runs torch on one thread.
        """
        if self._probe_threads:
            self._choose_threads()
        if not self.torch_single_thread:
            return
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        restore = threading.Thread(target=torch.set_num_threads, args=(before,), name="torch-threads-restore")
        restore.start()
        restore.join()

    def _choose_threads(self, pairs: int = 5, steps: int = 4, margin: float = 1.25) -> None:
        """Time decode steps with one thread and with every CPU; keep the faster count for each step size.

        llama.cpp's threads meet at a spinning barrier after every operation: on a quiet machine two
        threads decode faster than one, but where other processes keep the cores busy a pre-empted
        thread stalls the others at each barrier (a 2-core EPYC at load average 15: 528 ms per
        one-token step with two threads, 18 ms with one). So the count is measured here, at start-up,
        separately for one-token steps (``n_threads``) and for 16-token steps (``n_threads_batch``,
        what batched decoding and prompts use). The two counts take turns, ``steps`` steps each after one
        untimed step (the first step after a change pays for waking the other thread team: timed alone,
        two threads looked 1.03x one on a quiet Zen 4 where the bare loop runs 1.76x faster), so a burst
        of load hits both; every CPU is kept only if its median step is ``margin`` times faster, as one
        thread loses little on a quiet machine and all threads lose much on a busy one.
        ``HANDOFF_LLAMACPP_THREADS`` skips the probe.
        """
        counts = (1, self.threads)
        tokens = self.prompt_ids([{"role": "user", "content": "Say hello."}])
        medians: dict[tuple[int, int], float] = {}
        try:
            for width in (1, 16):
                self._decode([(token, j, 0, j == len(tokens) - 1) for j, token in enumerate(tokens)])
                position = len(tokens)
                seconds: dict[int, list[float]] = {n: [] for n in counts}
                for pair in range(pairs):
                    for n in counts:
                        self._llama.llama_set_n_threads(self._ctx, n, n)
                        for step in range(1 + steps):  # the first step after a change wakes the new thread team
                            if step == 1:
                                started = time.perf_counter()
                            self._decode([(tokens[-1], position + j, 0, True) for j in range(width)])
                            position += width
                        seconds[n].append((time.perf_counter() - started) / steps)
                    ratio = seconds[1][-1] / seconds[self.threads][-1]
                    if pair >= 1 and not 1 / 3 < ratio < 3:
                        break  # one count is far behind: no need to keep paying for it
                for n in counts:
                    medians[n, width] = sorted(seconds[n])[len(seconds[n]) // 2]
                self._llama.llama_memory_clear(self._memory, True)
        finally:
            self._llama.llama_memory_clear(self._memory, True)
        best = {w: self.threads if medians[1, w] > margin * medians[self.threads, w] else 1 for w in (1, 16)}
        self.threads, self.threads_batch = best[1], best[16]
        self._llama.llama_set_n_threads(self._ctx, self.threads, self.threads_batch)
        self.threads_reason = "timed at start-up: " + ", ".join(
            f"{n} thread{'s' if n > 1 else ''} {seconds * 1000:.1f} ms per {width}-token step"
            for (n, width), seconds in medians.items()
        )
        log.info(
            "llama.cpp threads: %d per token, %d per batch (%s)", self.threads, self.threads_batch, self.threads_reason
        )

    def _reset(self) -> None:
        self._llama.llama_memory_clear(self._memory, True)
        self._running, self._free_ids, self._reserved = [], list(range(self.max_batch_size)), 0

    def _fits(self, row: Row, joining: list[Row]) -> bool:
        """A free sequence and room in the shared cache for the prompt and all its new tokens."""
        reserved = self._reserved + sum(other.reserved for other in joining) + row.reserved
        return len(self._free_ids) > len(joining) and reserved <= self.n_ctx

    def _prefill(self, joining: list[_Sequence]) -> None:  # type: ignore[override]
        """Give each joining request a sequence and its reservation; its prompt is read by the next steps."""
        for sequence in joining:
            sequence.seq_id = self._free_ids.pop()
            self._reserved += sequence.reserved
            self._running.append(sequence)

    def _step(self) -> None:
        """One ``llama_decode`` for everyone: each decoding sequence's newest token, then prompt tokens.

        As llama.cpp's server fills a batch: the running answers' tokens first (one each, so nobody's
        next token waits on a newcomer's prompt), then the joining prompts in arrival order, up to
        ``n_batch`` tokens in all; a prompt longer than what is left continues in the next step. Logits
        are kept for each decoding sequence and for the last token of each prompt read to its end:
        those rows choose the next tokens, all in one ``_take``.
        """
        entries: list[tuple[int, int, int, bool]] = []  # (token, position, sequence id, keep logits)
        feeding: list[tuple[_Sequence, int]] = []
        running: list[_Sequence] = self._running  # type: ignore[assignment]
        decoding = [sequence for sequence in running if sequence.prompt_read == len(sequence.prompt_ids)]
        for sequence in decoding:
            entries.append((sequence.token_ids[-1], sequence.n_past, sequence.seq_id, True))
        rows: list[_Sequence] = list(decoding)
        for sequence in running:
            room = self.n_batch - len(entries)
            left = len(sequence.prompt_ids) - sequence.prompt_read
            if left == 0 or room <= 0:
                continue
            chunk = sequence.prompt_ids[sequence.prompt_read : sequence.prompt_read + room]
            start = sequence.prompt_read
            last = start + len(chunk) == len(sequence.prompt_ids)
            entries += [
                (token, start + j, sequence.seq_id, last and j == len(chunk) - 1) for j, token in enumerate(chunk)
            ]
            feeding.append((sequence, len(chunk)))
            if last:
                rows.append(sequence)
        self._decode(entries)
        if decoding and feeding:
            self.mixed_steps += 1
        for sequence in decoding:
            sequence.n_past += 1
        for sequence, count in feeding:
            sequence.prompt_read += count
            sequence.n_past += count
        if rows:  # none when the step only read part of a long prompt
            outputs = [i for i, entry in enumerate(entries) if entry[3]]
            self._take(rows, torch.from_numpy(self._logits(outputs)))

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Fill the batch with (token, position, sequence, keep logits) entries and decode them."""
        batch = self._batch
        for i, (token, position, seq_id, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = logits
        batch.n_tokens = len(entries)
        code = self._llama.llama_decode(self._ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code} (1: no room in the KV cache, <0: error)")

    def _logits(self, indices: Any) -> np.ndarray:
        rows = [
            np.ctypeslib.as_array(self._llama.llama_get_logits_ith(self._ctx, i), shape=(self.n_vocab,))
            for i in indices
        ]
        return np.stack(rows)  # copies out of llama.cpp's buffer before the next decode

    def _piece(self, token: int) -> bytes:
        """The bytes of one token's text (control tokens render as nothing)."""
        buffer = self._piece_buffer
        n = self._llama.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:n] if n > 0 else b""

    def _is_end(self, token: int) -> bool:
        return bool(self._llama.llama_vocab_is_eog(self._vocab, token))

    def _delta(self, row: _Sequence) -> str:  # type: ignore[override]
        return row.decoder.decode(self._piece(row.token_ids[-1]))

    def _final_text(self, row: _Sequence) -> str:  # type: ignore[override]
        return row.text + row.decoder.decode(b"", final=True)

    def _remove(self, keep: list[int]) -> None:
        self._running = [self._running[i] for i in keep]  # their sequences were released as they finished

    def _release(self, sequence: _Sequence) -> None:  # type: ignore[override]
        if sequence.seq_id >= 0:
            self._llama.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
            self._free_ids.append(sequence.seq_id)
            self._reserved -= sequence.reserved
            sequence.seq_id = -1
