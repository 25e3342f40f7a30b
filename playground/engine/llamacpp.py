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
the same code as the transformers engine's (``sampling.choose_tokens``, through ``batching``). The
prompt is the GGUF's own chat template, rendered with Jinja like ``apply_chat_template``, so both
engines see the same tokens.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from playground.engine.batching import BatchingEngine, Row
from playground.engine.model_store import bundled_gguf, bundled_revision
from playground.settings import BUNDLED_MODEL, BUNDLED_MODEL_NAME, Settings

Message = dict[str, str]
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
class _Sequence(Row):
    """A request as its own sequence in the shared KV cache, with its incremental UTF-8 decoder."""

    seq_id: int = -1
    n_past: int = 0
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
        self._start_worker("llamacpp-engine", self._native.free)

    def prompt_ids(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The tokens the model reads for this chat (the GGUF's chat template, special tokens parsed)."""
        text = self.tokenizer.apply_chat_template(messages, tools=tools)
        ids = self._native.model.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self._bos is not None and (not ids or ids[0] != self._bos):
            ids.insert(0, self._bos)
        return ids

    # --- the worker -----------------------------------------------------------------------------
    def _reset(self) -> None:
        self._llama.llama_memory_clear(self._memory, True)
        self._running, self._free_ids, self._reserved = [], list(range(self.max_batch_size)), 0

    def _fits(self, row: Row, joining: list[Row]) -> bool:
        """A free sequence and room in the shared cache for the prompt and all its new tokens."""
        reserved = self._reserved + sum(other.reserved for other in joining) + row.reserved
        return len(self._free_ids) > len(joining) and reserved <= self.n_ctx

    def _prefill(self, joining: list[_Sequence]) -> None:  # type: ignore[override]
        """Each joining request's prompt into its own sequence, in chunks; a failure is that request's only."""
        for sequence in joining:
            sequence.seq_id = self._free_ids.pop()
            self._reserved += sequence.reserved
            self._running.append(sequence)
            try:
                logits = self._read_prompt(sequence)
            except Exception as error:  # noqa: BLE001 - only this request fails; the batch is intact
                self._running.remove(sequence)
                self._release(sequence)
                sequence.generation._finish(None, error)
                continue
            self._take([sequence], torch.from_numpy(logits))

    def _read_prompt(self, sequence: _Sequence) -> np.ndarray:
        ids = sequence.prompt_ids
        chunk: list[int] = []
        for start in range(0, len(ids), PREFILL_CHUNK):
            chunk = ids[start : start + PREFILL_CHUNK]
            self._decode([(token, start + j, sequence.seq_id) for j, token in enumerate(chunk)], logits_last=True)
        sequence.n_past = len(ids)
        return self._logits([len(chunk) - 1])  # the last prompt token's row: the first answer token

    def _step(self) -> None:
        """One decode step for every running sequence: one token each, in one llama_decode call."""
        running: list[_Sequence] = self._running  # type: ignore[assignment]
        self._decode([(s.token_ids[-1], s.n_past, s.seq_id) for s in running], logits_last=False)
        for sequence in running:
            sequence.n_past += 1
        self._take(running, torch.from_numpy(self._logits(range(len(running)))))

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
