"""The local model in process through llama.cpp (llama-cpp-python), with our own decode loop.

Concurrency model: one worker thread owns the llama.cpp context and decodes the requests of every
session together. Each running request is its own sequence in one shared KV cache (``n_seq_max`` =
``max_batch_size``, ``kv_unified``), and each step decodes one token for every sequence in a single
``llama_decode`` call, so 16 sessions cost far less than 16 single streams. New requests are
prefilled between steps (nobody waits for the batch to drain); finished or stopped ones free their
sequence at the next step. llama.cpp's calls release the GIL (ctypes), so the app's threads keep
running while it decodes. Memory is bounded by ``llamacpp_n_ctx`` cache positions shared by all
sequences: a request reserves its prompt plus ``max_new_tokens`` and waits, in arrival order, until
they fit.

Per-token log-prob and entropy come from the last-row logits of each step over the full vocabulary
(no ``logits_all``, no second pass), and sampling, repetition penalty and n-gram ban included, is
the same code as the transformers engine's (``sampling.choose_tokens``). The prompt is the GGUF's
own chat template, rendered with Jinja like ``apply_chat_template``, so both engines see the same
tokens.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import os
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from playground.engine.local import Generation, GenerationRequest, LocalResult, RequestTooLarge
from playground.engine.model_store import bundled_gguf, bundled_revision
from playground.engine.sampling import choose_tokens, seeded_generator
from playground.settings import BUNDLED_MODEL, BUNDLED_MODEL_NAME, Settings

Message = dict[str, str]
_CLOSE = object()
PREFILL_CHUNK = 512  # prompt tokens per llama_decode call (llama.cpp's n_batch)
INSTALL_HINT = (
    "Run `make install` (it builds llama-cpp-python for this CPU), or: "
    "CMAKE_ARGS=-DGGML_NATIVE=ON pip install --no-cache-dir 'llama-cpp-python[server]>=0.3'"
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
    """The GGUF file the llama.cpp engines load: the bundled one, or ``local_model`` as a path."""
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
class _Sequence:
    """Worker-side state of one request: its sequence in the KV cache and its text so far."""

    generation: Generation
    prompt_ids: list[int]
    generator: torch.Generator | None
    seq_id: int = -1
    n_past: int = 0
    next_token: int = 0
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    ttft_ms: float = 0.0
    eos: bool = False
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    @property
    def request(self) -> GenerationRequest:
        return self.generation.request

    @property
    def reserved(self) -> int:
        """KV cache positions this sequence may occupy before it must finish."""
        return len(self.prompt_ids) + self.request.max_new_tokens


class _Native:
    """The llama.cpp objects, freed once the worker has stopped (never while it decodes)."""

    def __init__(self, llama_cpp: Any, model: Any, context: Any, batch: Any) -> None:
        self.llama_cpp, self.model, self.context, self.batch = llama_cpp, model, context, batch

    def free(self) -> None:
        self.llama_cpp.llama_batch_free(self.batch)
        self.context.close()
        self.model.close()


class LlamaCppEngine:
    """A GGUF model in llama.cpp plus the worker thread that decodes for all sessions together."""

    kind = "llamacpp"
    base_url_host: str | None = None
    gives_logprobs = True  # from each step's last-row logits, over the full vocabulary
    entropy_from_top_k: int | None = None

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
        self.threads = settings.llamacpp_threads or len(os.sched_getaffinity(0))
        self.max_batch_size = min(settings.max_batch_size, llama_cpp.llama_max_parallel_sequences())
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = settings.llamacpp_n_ctx
        params.n_batch = params.n_ubatch = max(PREFILL_CHUNK, self.max_batch_size)
        params.n_seq_max = self.max_batch_size
        params.kv_unified = True  # one pool of cache positions for all sequences
        params.n_threads = params.n_threads_batch = self.threads
        params.no_perf = True
        context = _internals.LlamaContext(model=model, params=params, verbose=True)
        batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
        self._native = _Native(llama_cpp, model, context, batch)
        self._ctx, self._batch, self._vocab = context.ctx, batch, model.vocab
        self._memory = llama_cpp.llama_get_memory(context.ctx)
        self.n_ctx = llama_cpp.llama_n_ctx(context.ctx)
        self.n_ctx_train = model.n_ctx_train()
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
        self.peak_batch_size = 0  # observed, for benchmarks
        self._piece_buffer = ctypes.create_string_buffer(256)
        self._requests: queue.Queue[Any] = queue.Queue()
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._running: list[_Sequence] = []
        self._free_ids = list(range(self.max_batch_size))
        self._reserved = 0
        self._worker = threading.Thread(target=self._serve, name="llamacpp-engine", daemon=True)
        self._worker.start()
        self._finalizer = weakref.finalize(self, _stop_worker, self._requests, self._worker, self._native)

    # --- callers (any thread) -------------------------------------------------------------------
    def generate(
        self,
        messages: list[Message],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        seed: int | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Generation:
        """Submit a chat; decoding parameters default to the settings the engine was loaded with."""
        generation = Generation(
            GenerationRequest.from_call(
                self.settings,
                messages,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                repetition_penalty=repetition_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size,
                seed=seed,
                tools=tools,
            )
        )
        self._requests.put(generation)
        return generation

    def prompt_ids(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The tokens the model reads for this chat (the GGUF's chat template, special tokens parsed)."""
        text = self.tokenizer.apply_chat_template(messages, tools=tools)
        ids = self._native.model.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self._bos is not None and (not ids or ids[0] != self._bos):
            ids.insert(0, self._bos)
        return ids

    def warm_up(self) -> None:
        """Run the prefill and the batched decode once, so the first attendee doesn't pay."""
        hello = [{"role": "user", "content": "Hi"}]
        first = self.generate(hello, max_new_tokens=4, temperature=0.0)
        second = self.generate([*hello, {"role": "assistant", "content": "Hello!"}, *hello], max_new_tokens=4)
        first.wait()
        second.wait()

    def close(self) -> None:
        """End the worker after the requests already submitted, then free llama.cpp's memory."""
        self._finalizer()

    # --- the worker -----------------------------------------------------------------------------
    def _serve(self) -> None:
        closing = False
        while not closing or self._running or self._waiting:
            closing = self._collect(block=not self._running and not self._waiting) or closing
            try:
                self._finish_stopped()
                self._admit()
                if self._running:
                    self._step()
            except BaseException as error:  # noqa: BLE001 - handed to the callers' threads
                for sequence in self._running:
                    sequence.generation._finish(None, error)
                self._llama.llama_memory_clear(self._memory, True)
                self._running, self._free_ids, self._reserved = [], list(range(self.max_batch_size)), 0

    def _collect(self, block: bool) -> bool:
        """Move submitted requests to the waiting line; True when ``close()`` was called."""
        closing = False
        try:
            item = self._requests.get() if block else self._requests.get_nowait()
            while True:
                if item is _CLOSE:
                    closing = True
                else:
                    self._enqueue(item)
                item = self._requests.get_nowait()
        except queue.Empty:
            return closing

    def _enqueue(self, generation: Generation) -> None:
        request = generation.request
        try:
            ids = self.prompt_ids(request.messages, request.tools)
            limit = min(self.n_ctx, self.n_ctx_train)
            if len(ids) + request.max_new_tokens > limit:
                raise RequestTooLarge(
                    f"This conversation needs {len(ids) + request.max_new_tokens:,} tokens of model memory; "
                    f"the engine allows {limit:,}. Start a new conversation or shorten the prompt."
                )
        except BaseException as error:  # noqa: BLE001
            generation._finish(None, error)
            return
        self._waiting.append(_Sequence(generation, ids, seeded_generator(request.temperature, request.seed)))

    def _admit(self) -> None:
        """Prefill waiting requests that fit (a free sequence, cache positions) and add them to the batch."""
        while self._waiting:
            sequence = self._waiting[0]
            if sequence.generation.stopped or sequence.request.max_new_tokens <= 0:
                self._waiting.popleft()
                self._finish(sequence, "stopped" if sequence.generation.stopped else "length")
                continue
            if not self._free_ids or self._reserved + sequence.reserved > self.n_ctx:
                return  # first come, first served: nobody overtakes the head of the line
            self._waiting.popleft()
            sequence.seq_id = self._free_ids.pop()
            self._reserved += sequence.reserved
            self._running.append(sequence)
            try:
                logits = self._prefill(sequence)
            except Exception as error:  # noqa: BLE001 - only this request fails; the batch is intact
                self._running.remove(sequence)
                self._release(sequence)
                sequence.generation._finish(None, error)
                continue
            self._take([sequence], logits)
            self.peak_batch_size = max(self.peak_batch_size, len(self._running))
            self._drop_finished()

    def _prefill(self, sequence: _Sequence) -> np.ndarray:
        ids = sequence.prompt_ids
        chunk: list[int] = []
        for start in range(0, len(ids), PREFILL_CHUNK):
            chunk = ids[start : start + PREFILL_CHUNK]
            self._decode([(token, start + j, sequence.seq_id) for j, token in enumerate(chunk)], logits_last=True)
        sequence.n_past = len(ids)
        return self._logits([len(chunk) - 1])  # the last prompt token's row: the first answer token

    def _step(self) -> None:
        """One decode step for every running sequence: one token each, in one llama_decode call."""
        running = self._running
        self._decode([(s.next_token, s.n_past, s.seq_id) for s in running], logits_last=False)
        for sequence in running:
            sequence.n_past += 1
        self._take(running, self._logits(range(len(running))))
        self._drop_finished()

    def _decode(self, entries: list[tuple[int, int, int]], logits_last: bool) -> None:
        """Fill the batch with (token, position, sequence) entries and decode them.

        With ``logits_last`` only the last entry yields logits (a prompt); else every entry does.
        """
        batch = self._batch
        for i, (token, position, seq_id) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = not logits_last
        batch.logits[len(entries) - 1] = True
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

    def _take(self, sequences: list[_Sequence], logits: np.ndarray) -> None:
        """Choose one token per sequence, record its log-prob and the entropy, and stream the text."""
        tokens, chosen, entropies = choose_tokens(
            torch.from_numpy(logits),
            [s.request.decoding for s in sequences],
            [s.generator for s in sequences],
            [s.token_ids for s in sequences],
        )
        now = time.perf_counter()
        is_eog = self._llama.llama_vocab_is_eog
        for sequence, token, logprob, entropy in zip(sequences, tokens, chosen, entropies, strict=True):
            generation = sequence.generation
            generation.logprobs.append(logprob)
            generation.entropies.append(entropy)
            if len(generation.logprobs) == 1:
                sequence.ttft_ms = (now - generation.submitted_at) * 1000
            if is_eog(self._vocab, token):
                sequence.eos = True
                continue
            sequence.next_token = token
            sequence.token_ids.append(token)
            delta = sequence.decoder.decode(self._piece(token))
            if delta:
                sequence.text += delta
                generation._emit(delta)

    def _piece(self, token: int) -> bytes:
        """The bytes of one token's text (control tokens render as nothing)."""
        buffer = self._piece_buffer
        n = self._llama.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:n] if n > 0 else b""

    def _finish_stopped(self) -> None:
        for sequence in self._running:
            if sequence.generation.stopped and not sequence.generation.finished:
                self._finish(sequence, "stopped")
        self._drop_finished()

    def _drop_finished(self) -> None:
        for sequence in self._running:
            if sequence.generation.finished:
                continue
            if sequence.eos:
                self._finish(sequence, "stop")
            elif len(sequence.generation.logprobs) >= sequence.request.max_new_tokens:
                self._finish(sequence, "length")
        self._running = [s for s in self._running if not s.generation.finished]

    def _release(self, sequence: _Sequence) -> None:
        if sequence.seq_id >= 0:
            self._llama.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
            self._free_ids.append(sequence.seq_id)
            self._reserved -= sequence.reserved
            sequence.seq_id = -1

    def _finish(self, sequence: _Sequence, finish_reason: str) -> None:
        self._release(sequence)
        generation = sequence.generation
        tail = sequence.decoder.decode(b"", final=True)
        if tail:
            sequence.text += tail
            generation._emit(tail)
        generation._finish(
            LocalResult(
                text=sequence.text,
                model=self.model_name,
                model_revision=self.model_revision,
                dtype=self.dtype,
                tokens_in=len(sequence.prompt_ids),
                tokens_out=len(generation.logprobs),
                ttft_ms=sequence.ttft_ms,
                latency_ms=(time.perf_counter() - generation.submitted_at) * 1000,
                finish_reason=finish_reason,
                logprobs=list(generation.logprobs),
                entropies=list(generation.entropies),
                engine=self.kind,
                decoding=sequence.request.decoding.record(),
            )
        )


def _stop_worker(requests: queue.Queue[Any], worker: threading.Thread, native: _Native) -> None:
    requests.put(_CLOSE)
    worker.join()
    native.free()
