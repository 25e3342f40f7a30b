"""The local open-weight model, loaded once per process and shared by every session.

One worker thread per loaded model decodes the requests of all sessions together: a padded batch
(left padding, an attention mask and explicit positions) over one batched ``DynamicCache``. New
requests are prefilled between decode steps and their cache rows merged into the running batch, so
nobody waits for the batch to drain; finished or stopped rows leave at the next step. Callers on
any thread get a ``Generation`` handle that streams text deltas. Per-token log-probabilities and
entropies come from the logits of the decoding step itself; no second forward pass is made.

Why our own batching rather than transformers' continuous batching (``generate_batch``): it keeps
per-request streaming, log-probs and entropies from the decoding step, per-request sampling and
seeds, and ``stop()`` in one small loop we control, with memory bounded by two settings instead of a
paged-cache sizing. The throughput comparison is measured by ``bench/batching_choice.py`` (figures
in ``bench/README.md``).

Memory is bounded by ``max_batch_size`` rows and ``max_batch_tokens`` cache positions
(rows x padded width); a request that could push the batch past either waits its turn in arrival
order, so later requests never overtake it and nobody starves.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from playground.engine.device import resolve_dtype
from playground.engine.model_store import bundled_revision, resolve_model
from playground.engine.sampling import Decoding, choose_tokens
from playground.settings import BUNDLED_MODEL, BUNDLED_MODEL_NAME, Settings

Message = dict[str, str]
_DONE = object()
_CLOSE = object()


class RequestTooLarge(ValueError):
    """A conversation that cannot fit in the engine's memory bound even when decoded alone."""


@dataclass
class LocalResult:
    """What happened during one local generation: the record stored with the answer."""

    text: str
    model: str
    model_revision: str | None
    dtype: str | None
    tokens_in: int
    tokens_out: int
    ttft_ms: float
    latency_ms: float
    finish_reason: str
    logprobs: list[float]
    entropies: list[float]
    engine: str = "transformers"  # which engine answered: transformers | llamacpp | openai
    base_url_host: str | None = None  # the model server's host[:port] (openai engine)
    entropy_from_top_k: int | None = None  # entropies from the top k log-probs only (served engines)
    decoding: dict[str, Any] | None = None  # the decoding parameters applied (``Decoding.record``)


@dataclass
class GenerationRequest:
    messages: list[Message]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None  # rendered by the chat template (self-handoff)
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    @classmethod
    def from_call(
        cls,
        settings: Settings,
        messages: list[Message],
        *,
        seed: int | None = None,
        tools: list[dict[str, Any]] | None = None,
        **decoding: Any,
    ) -> GenerationRequest:
        """A request whose decoding parameters are the call's where given, else the settings' defaults."""
        values = Decoding.from_settings(settings, **decoding)
        return cls(messages=messages, seed=seed, tools=tools, **vars(values))

    @property
    def decoding(self) -> Decoding:
        return Decoding(
            self.max_new_tokens, self.temperature, self.top_p, self.repetition_penalty, self.no_repeat_ngram_size
        )


class Generation:
    """Handle on one request: iterate it for text deltas, read ``result`` once it is finished.

    ``logprobs`` and ``entropies`` grow while tokens arrive, so a policy may look at the running
    statistics before the answer is complete (and ``stop()`` it early).
    """

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.logprobs: list[float] = []
        self.entropies: list[float] = []
        self.result: LocalResult | None = None
        self.error: BaseException | None = None
        self.submitted_at = time.perf_counter()
        self._deltas: queue.Queue[Any] = queue.Queue()
        self._stopped = threading.Event()
        self._finished = threading.Event()

    def __iter__(self):  # noqa: ANN204
        while True:
            item = self._deltas.get()
            if item is _DONE:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def stop(self) -> None:
        """Ask the worker to end this generation before its next token (finish reason ``stopped``)."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> LocalResult:
        """Block until finished and return the record."""
        if not self._finished.wait(timeout):
            raise TimeoutError("local generation did not finish in time")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    # worker side
    def _emit(self, delta: str) -> None:
        self._deltas.put(delta)

    def _finish(self, result: LocalResult | None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self._finished.set()
        self._deltas.put(_DONE)


@dataclass
class _Row:
    """Worker-side state of one request in the running batch."""

    generation: Generation
    prompt_ids: list[int]
    rng: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    prefix_offset: int = 0
    read_offset: int = 0
    ttft_ms: float = 0.0
    eos: bool = False

    @property
    def request(self) -> GenerationRequest:
        return self.generation.request

    @property
    def width_bound(self) -> int:
        """Cache columns this row can occupy before it must finish."""
        return len(self.prompt_ids) + self.request.max_new_tokens


class LocalEngine:
    """One loaded model plus the worker thread that decodes for all sessions together."""

    kind = "transformers"
    base_url_host: str | None = None
    gives_logprobs = True  # from the decoding step's own logits, over the full vocabulary

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        started = time.perf_counter()
        path = resolve_model(settings.local_model, settings.model_cache_dir)
        choice = resolve_dtype(settings.local_dtype, settings.local_device)
        self.dtype, self.dtype_reason = choice.dtype, choice.reason
        self.device = torch.device(settings.local_device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.dtype))
        self.model.to(self.device).eval()
        self.load_seconds = time.perf_counter() - started
        self.model_name, self.model_revision = _describe(settings.local_model, self.model)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids.discard(None)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids, default=0)
        self.max_batch_size = settings.max_batch_size
        self.max_batch_tokens = settings.max_batch_tokens
        self.peak_batch_size = 0  # observed, for benchmarks and the organizer view
        self._requests: queue.Queue[Any] = queue.Queue()
        self._waiting: collections.deque[_Row] = collections.deque()
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self._next = torch.zeros((0,), dtype=torch.long, device=self.device)
        self._worker = threading.Thread(target=self._serve, name="local-engine", daemon=True)
        self._worker.start()
        # Join the worker before the interpreter tears torch down (a daemon thread killed inside a
        # torch parallel region aborts the process at exit).
        self._finalizer = weakref.finalize(self, _stop_worker, self._requests, self._worker)

    def submit(self, request: GenerationRequest) -> Generation:
        generation = Generation(request)
        self._requests.put(generation)
        return generation

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
        """Submit a chat; decoding parameters default to the settings the engine was loaded with.

        ``tools`` (JSON schemas) go through the model's chat template, as ``apply_chat_template`` takes them.
        """
        return self.submit(
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

    def warm_up(self) -> None:
        """Run the prefill, merge and batched decode paths once, so the first attendee doesn't pay."""
        hello = [{"role": "user", "content": "Hi"}]
        first = self.generate(hello, max_new_tokens=4, temperature=0.0)
        second = self.generate([*hello, {"role": "assistant", "content": "Hello!"}, *hello], max_new_tokens=4)
        first.wait()
        second.wait()

    def close(self) -> None:
        """End the worker after the requests already submitted (tests and benchmarks load several)."""
        self._finalizer()

    # worker
    def _serve(self) -> None:
        closing = False
        while not closing or self._rows or self._waiting:
            closing = self._collect(block=not self._rows and not self._waiting) or closing
            try:
                with torch.inference_mode():
                    self._finish_stopped()
                    self._admit()
                    if self._rows:
                        self._step()
            except BaseException as error:  # noqa: BLE001 - handed to the callers' threads
                for row in self._rows:
                    row.generation._finish(None, error)
                self._reset_batch()

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
            prompt_ids = self.tokenizer.apply_chat_template(
                request.messages, tools=request.tools, add_generation_prompt=True, return_dict=True
            )["input_ids"]
            if len(prompt_ids) + request.max_new_tokens > self.max_batch_tokens:
                raise RequestTooLarge(
                    f"This conversation needs {len(prompt_ids) + request.max_new_tokens:,} tokens of model "
                    f"memory; the engine allows {self.max_batch_tokens:,}. Start a new conversation or "
                    "shorten the prompt."
                )
        except BaseException as error:  # noqa: BLE001
            generation._finish(None, error)
            return
        rng = None
        if request.temperature > 0:
            rng = torch.Generator(device="cpu")
            rng.manual_seed(request.seed if request.seed is not None else torch.seed())
        self._waiting.append(_Row(generation, list(prompt_ids), rng))

    def _admit(self) -> None:
        """Prefill waiting requests that fit the memory bound and merge them into the batch."""
        joining: list[_Row] = []
        width = max((row.width_bound for row in self._rows), default=0)
        while self._waiting:
            row = self._waiting[0]
            if row.generation.stopped or row.request.max_new_tokens <= 0:
                self._waiting.popleft()
                self._finish_row(row, "stopped" if row.generation.stopped else "length")
                continue
            rows = len(self._rows) + len(joining) + 1
            new_width = max(width, row.width_bound)
            if rows > self.max_batch_size or rows * new_width > self.max_batch_tokens:
                break  # first come, first served: nobody overtakes the head of the line
            joining.append(self._waiting.popleft())
            width = new_width
        if joining:
            self._prefill(joining)

    def _prefill(self, joining: list[_Row]) -> None:
        length = max(len(row.prompt_ids) for row in joining)
        ids = torch.full((len(joining), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(joining), length), dtype=torch.long)
        for i, row in enumerate(joining):
            ids[i, length - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            mask[i, length - len(row.prompt_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = DynamicCache(config=self.model.config)
        try:
            logits = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
        except Exception as error:  # noqa: BLE001 - the running batch is intact; only these fail
            if len(joining) > 1:  # one request's failure (out of memory on a long prompt) is not the others'
                del cache
                for row in joining:
                    self._prefill([row])
                return
            joining[0].generation._finish(None, error)
            return
        try:
            self._merge(joining, cache, mask)
        except BaseException as error:  # noqa: BLE001 - rows not yet in the batch must not wait forever
            merged = {id(row) for row in self._rows}
            for row in joining:
                if id(row) not in merged:
                    row.generation._finish(None, error)
            raise
        tokens = self._take(joining, logits)
        self._next = torch.cat([self._next, tokens])
        self.peak_batch_size = max(self.peak_batch_size, len(self._rows))
        self._drop_finished()

    def _merge(self, joining: list[_Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Append the new rows' cache to the batch's, left-padding whichever is shorter."""
        if self._cache is None or not self._rows:
            self._cache, self._mask, self._rows = cache, mask, list(joining)
            self._next = self._next[:0]
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, width, -2), _pad_left(new.keys, width, -2)])
            old.values = torch.cat([_pad_left(old.values, width, -2), _pad_left(new.values, width, -2)])
        self._mask = torch.cat([_pad_left(self._mask, width, -1), _pad_left(mask, width, -1)])
        self._rows.extend(joining)

    def _step(self) -> None:
        """One decode step for every row: one token each."""
        ones = torch.ones((len(self._rows), 1), dtype=torch.long, device=self.device)
        positions = self._mask.sum(-1, keepdim=True)
        self._mask = torch.cat([self._mask, ones], dim=-1)
        logits = self.model(
            input_ids=self._next[:, None],
            attention_mask=self._mask,
            position_ids=positions,
            cache=self._cache,
            use_cache=True,
        ).logits[:, -1]
        self._next = self._take(self._rows, logits)
        self._drop_finished()

    def _take(self, rows: list[_Row], logits: torch.Tensor) -> torch.Tensor:
        """Choose one token per row, record its log-prob and the entropy, and stream the text."""
        chosen_tokens, chosen, entropies = choose_tokens(
            logits,
            [row.request.decoding for row in rows],
            [row.rng for row in rows],
            [row.token_ids for row in rows],
        )
        tokens = torch.tensor(chosen_tokens, dtype=torch.long, device=self.device)
        now = time.perf_counter()
        for row, token, logprob, entropy in zip(rows, chosen_tokens, chosen, entropies, strict=True):
            generation = row.generation
            generation.logprobs.append(logprob)
            generation.entropies.append(entropy)
            if len(generation.logprobs) == 1:
                row.ttft_ms = (now - generation.submitted_at) * 1000
            if token in self.eos_ids:
                row.eos = True
                continue
            row.token_ids.append(token)
            self._stream(row)
        return tokens

    def _stream(self, row: _Row) -> None:
        """Emit the newly readable text, holding back half a multi-byte character (TGI's scheme)."""
        decode = self.tokenizer.decode
        before = decode(row.token_ids[row.prefix_offset : row.read_offset], skip_special_tokens=True)
        after = decode(row.token_ids[row.prefix_offset :], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            delta = after[len(before) :]
            row.text += delta
            row.generation._emit(delta)
            row.prefix_offset, row.read_offset = row.read_offset, len(row.token_ids)

    def _finish_stopped(self) -> None:
        for row in self._rows:
            if row.generation.stopped and not row.generation.finished:
                self._finish_row(row, "stopped")
        self._drop_finished()

    def _drop_finished(self) -> None:
        """Finish rows that hit EOS or their length, then drop them and all-padding cache columns."""
        for row in self._rows:
            generation = row.generation
            if generation.finished:
                continue
            if row.eos:
                self._finish_row(row, "stop")
            elif len(generation.logprobs) >= row.request.max_new_tokens:
                self._finish_row(row, "length")
        keep = [i for i, row in enumerate(self._rows) if not row.generation.finished]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset_batch()
            return
        index = torch.tensor(keep, device=self.device)
        self._rows = [self._rows[i] for i in keep]
        self._mask, self._next = self._mask[index], self._next[index]
        self._cache.batch_select_indices(index)
        used = int(self._mask.any(0).long().argmax())  # first column some row still attends to
        if used:
            self._mask = self._mask[:, used:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[..., used:, :], layer.values[..., used:, :]

    def _reset_batch(self) -> None:
        self._rows, self._cache = [], None
        self._mask = self._mask[:0, :0]
        self._next = self._next[:0]

    def _finish_row(self, row: _Row, finish_reason: str) -> None:
        generation = row.generation
        text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
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
                decoding=row.request.decoding.record(),
            )
        )


def _stop_worker(requests: queue.Queue[Any], worker: threading.Thread) -> None:
    requests.put(_CLOSE)
    worker.join()


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _describe(configured: str, model: Any) -> tuple[str, str | None]:
    if configured == BUNDLED_MODEL:
        return BUNDLED_MODEL_NAME, bundled_revision()
    return configured, getattr(model.config, "_commit_hash", None)
