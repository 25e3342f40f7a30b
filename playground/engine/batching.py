"""What the two in-process engines share: the request line, the worker loop and the token bookkeeping.

One worker thread owns the model and decodes the requests of every session together. Submitted
requests wait in arrival order; between decode steps the head of the line is admitted while it fits
the engine's memory bound (first come, first served: nobody overtakes it, so nobody starves), and
finished or stopped requests leave at the next step. Each step chooses one token per running request
(``sampling.choose_tokens``), appends its log-prob and entropy to the request's stream as it arrives
(no second forward pass) and streams the newly readable text.

An engine says how it renders a prompt (``prompt_ids``), whether a request fits (``_fits``), how it
prefills and steps, how it drops finished rows, which token ends an answer and how token ids become
text. ``local.LocalEngine`` (transformers) and ``llamacpp.LlamaCppEngine`` are the two.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from playground.engine.contract import Generation, GenerationRequest, LocalModelEngine, LocalResult, Message
from playground.engine.sampling import choose_tokens, seeded_generator

_CLOSE = object()


class RequestTooLarge(ValueError):
    """A conversation that cannot fit in the engine's memory bound even when decoded alone."""


@dataclass
class Row:
    """Worker-side state of one request in the running batch."""

    generation: Generation
    prompt_ids: list[int]
    generator: torch.Generator | None  # None: greedy
    token_ids: list[int] = field(default_factory=list)
    text: str = ""  # streamed so far
    ttft_ms: float = 0.0
    eos: bool = False

    @property
    def request(self) -> GenerationRequest:
        return self.generation.request

    @property
    def reserved(self) -> int:
        """Cache positions this request may occupy before it must finish."""
        return len(self.prompt_ids) + self.request.max_new_tokens


class BatchingEngine(LocalModelEngine):
    """The request line and worker loop of an in-process engine; subclasses decode."""

    row_type: ClassVar[type[Row]] = Row
    context_limit: int  # the most cache positions one request may need (prompt + new tokens)

    def _start_worker(self, name: str, free: Callable[[], None] | None = None) -> None:
        """Start the worker; ``free`` releases native memory once it has stopped (never while it decodes)."""
        self.peak_batch_size = 0  # observed, for benchmarks and the organizer view
        self._requests: queue.Queue[Any] = queue.Queue()
        self._waiting: collections.deque[Row] = collections.deque()
        self._running: list[Row] = []
        self._worker = threading.Thread(target=self._serve, name=name, daemon=True)
        self._worker.start()
        # Join the worker before the interpreter tears torch down (a daemon thread killed inside a
        # torch parallel region aborts the process at exit).
        self._finalizer = weakref.finalize(self, _stop_worker, self._requests, self._worker, free)

    def _start(self, generation: Generation) -> None:
        self._requests.put(generation)

    def close(self) -> None:
        """End the worker after the requests already submitted (tests and benchmarks load several)."""
        self._finalizer()

    # --- what an engine provides ---------------------------------------------------------------
    def prompt_ids(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The tokens the model reads for this chat, through its chat template."""
        raise NotImplementedError

    def _fits(self, row: Row, joining: list[Row]) -> bool:
        """Whether ``row`` may join the batch now, along with the rows already ``joining`` it."""
        raise NotImplementedError

    def _prefill(self, joining: list[Row]) -> None:
        """Read the joining rows' prompts, add them to the batch and ``_take`` their first tokens."""
        raise NotImplementedError

    def _step(self) -> None:
        """One decode step: one token for every running row, through ``_take``."""
        raise NotImplementedError

    def _remove(self, keep: list[int]) -> None:
        """Keep only these running rows (by index) and free what the others held."""
        raise NotImplementedError

    def _reset(self) -> None:
        """Forget the whole batch after a failure (its rows have been told)."""
        raise NotImplementedError

    def _is_end(self, token: int) -> bool:
        raise NotImplementedError

    def _delta(self, row: Row) -> str:
        """The text that the row's newest token makes readable ("" while a character is incomplete)."""
        raise NotImplementedError

    def _final_text(self, row: Row) -> str:
        """The whole answer once the row is done (any held-back tail included)."""
        raise NotImplementedError

    def _release(self, row: Row) -> None:
        """Free what the row holds in the engine as it finishes."""

    # --- the worker -----------------------------------------------------------------------------
    def _on_worker_start(self) -> None:
        """Set up the worker thread before its first request (thread-local settings)."""

    def _serve(self) -> None:
        self._on_worker_start()
        closing = False
        while not closing or self._running or self._waiting:
            closing = self._collect(block=not self._running and not self._waiting) or closing
            try:
                with torch.inference_mode():
                    self._finish_stopped()
                    self._admit()
                    if self._running:
                        self._step()
                        self._drop_finished()
            except BaseException as error:  # noqa: BLE001 - handed to the callers' threads
                for row in self._running:
                    row.generation._finish(None, error)
                self._reset()

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
            if len(ids) + request.max_new_tokens > self.context_limit:
                raise RequestTooLarge(
                    f"This conversation needs {len(ids) + request.max_new_tokens:,} tokens of model memory; "
                    f"the engine allows {self.context_limit:,}. Start a new conversation or shorten the prompt."
                )
        except BaseException as error:  # noqa: BLE001
            generation._finish(None, error)
            return
        self._waiting.append(self.row_type(generation, list(ids), seeded_generator(request.temperature, request.seed)))

    def _admit(self) -> None:
        """Prefill waiting requests that fit the memory bound and add them to the batch."""
        joining: list[Row] = []
        while self._waiting:
            row = self._waiting[0]
            if row.generation.stopped or row.request.max_new_tokens <= 0:
                self._waiting.popleft()
                self._finish(row, "stopped" if row.generation.stopped else "length")
                continue
            if not self._fits(row, joining):
                break  # first come, first served: nobody overtakes the head of the line
            joining.append(self._waiting.popleft())
        if joining:
            self._prefill(joining)
            self.peak_batch_size = max(self.peak_batch_size, len(self._running))
            self._drop_finished()

    def _take(self, rows: list[Row], logits: torch.Tensor) -> list[int]:
        """Choose one token per row, record its log-prob and the entropy, and stream the text."""
        tokens, chosen, entropies = choose_tokens(
            logits,
            [row.request.decoding for row in rows],
            [row.generator for row in rows],
            [row.token_ids for row in rows],
        )
        now = time.perf_counter()
        for row, token, logprob, entropy in zip(rows, tokens, chosen, entropies, strict=True):
            generation = row.generation
            generation.logprobs.append(logprob)
            generation.entropies.append(entropy)
            if len(generation.logprobs) == 1:
                row.ttft_ms = (now - generation.submitted_at) * 1000
            if self._is_end(token):
                row.eos = True
                continue
            row.token_ids.append(token)
            delta = self._delta(row)
            if delta:
                row.text += delta
                generation._emit(delta)
        return tokens

    def _finish_stopped(self) -> None:
        for row in self._running:
            if row.generation.stopped and not row.generation.finished:
                self._finish(row, "stopped")
        self._drop_finished()

    def _drop_finished(self) -> None:
        """Finish rows that hit the end of their answer or their length, then drop them."""
        for row in self._running:
            generation = row.generation
            if generation.finished:
                continue
            if row.eos:
                self._finish(row, "stop")
            elif len(generation.logprobs) >= row.request.max_new_tokens:
                self._finish(row, "length")
        keep = [i for i, row in enumerate(self._running) if not row.generation.finished]
        if len(keep) < len(self._running):
            self._remove(keep)

    def _finish(self, row: Row, finish_reason: str) -> None:
        self._release(row)
        generation = row.generation
        text = self._final_text(row)
        if text.startswith(row.text) and len(text) > len(row.text):
            generation._emit(text[len(row.text) :])  # a held-back tail
        generation._finish(
            LocalResult(
                text=text,
                model=self.model_name,
                model_revision=self.model_revision,
                dtype=self.dtype,
                tokens_in=len(row.prompt_ids),
                tokens_out=len(generation.logprobs),
                ttft_ms=row.ttft_ms,
                latency_ms=(time.perf_counter() - generation.submitted_at) * 1000,
                finish_reason=finish_reason,
                logprobs=list(generation.logprobs),
                entropies=list(generation.entropies),
                engine=self.kind,
                decoding=row.request.decoding.record(),
            )
        )


def _stop_worker(requests: queue.Queue[Any], worker: threading.Thread, free: Callable[[], None] | None) -> None:
    requests.put(_CLOSE)
    worker.join()
    if free is not None:
        free()
