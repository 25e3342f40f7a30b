"""The answer-stream contract: what every engine, local or cloud, hands back for one answer.

An ``AnswerEngine`` starts an answer for a conversation with decoding parameters (``generate``) and
returns an ``AnswerStream`` at once; the answer is written on the engine's own thread. Iterating the
stream gives the text deltas as they arrive; its ``logprobs`` and ``entropies`` grow token by token
(empty where the engine gives none, as the cloud does), so a policy or a watchdog may look at them
before the answer is complete and ``stop()`` it; when the iteration ends, ``result`` holds the
``AnswerResult`` and ``wait()`` returns it. The comparison drives both arms through this contract
alone, and a wrapper around any ``AnswerStream`` (e.g. a loop detector) plugs in the same way.

Engines: ``local.LocalEngine`` (transformers), ``llamacpp.LlamaCppEngine``, ``served.ServedEngine``
(an OpenAI-compatible model server) and ``cloud.CloudClient``. Each fills a ``Generation``, the one
concrete stream: the engine's thread calls ``_emit`` and ``_finish``; callers on any thread read it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from playground.engine.sampling import Decoding
from playground.settings import Settings

Message = dict[str, str]
_DONE = object()


@dataclass(kw_only=True)
class AnswerResult:
    """What one finished answer was, whichever engine wrote it: the figures stored with the answer."""

    text: str
    model: str
    tokens_in: int | None
    tokens_out: int | None
    ttft_ms: float | None
    latency_ms: float
    finish_reason: str | None
    base_url_host: str | None = None  # the server's host[:port], for engines behind HTTP
    logprobs: list[float] = field(default_factory=list)  # per token, where the engine gives them
    entropies: list[float] = field(default_factory=list)
    decoding: dict[str, Any] | None = None  # the decoding parameters applied (``Decoding.record``)

    @property
    def ok(self) -> bool:
        """False when the answer failed and was recorded as such (a cloud error) rather than raised."""
        return True


@dataclass(kw_only=True)
class LocalResult(AnswerResult):
    """A local engine's answer: which engine and model wrote it, with per-token log-probs and entropies."""

    model_revision: str | None
    dtype: str | None
    engine: str = "transformers"  # which engine answered: transformers | llamacpp | openai
    entropy_from_top_k: int | None = None  # entropies from the top k log-probs only (served engines)


class AnswerStream(Protocol):
    """One answer being written: iterate for text deltas; ``result`` is set when the iteration ends."""

    logprobs: list[float]  # grow while tokens arrive
    entropies: list[float]

    @property
    def result(self) -> AnswerResult | None: ...

    def __iter__(self) -> Iterator[str]: ...

    def stop(self) -> None:
        """End the answer before its next token (finish reason ``stopped``)."""
        ...

    def wait(self, timeout: float | None = None) -> AnswerResult:
        """Block until finished and return the result (an engine's failure is raised here)."""
        ...


@dataclass
class GenerationRequest:
    """A conversation and the decoding parameters for one answer."""

    messages: list[Message]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None  # rendered by the chat template (self-handoff)
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    @property
    def decoding(self) -> Decoding:
        return Decoding(
            self.max_new_tokens, self.temperature, self.top_p, self.repetition_penalty, self.no_repeat_ngram_size
        )


class Generation:
    """The stream every engine returns: the engine's thread fills it, any thread reads it.

    ``logprobs`` and ``entropies`` grow while tokens arrive, so a policy may look at the running
    statistics before the answer is complete (and ``stop()`` it early).
    """

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.logprobs: list[float] = []
        self.entropies: list[float] = []
        self.result: AnswerResult | None = None
        self.error: BaseException | None = None
        self.submitted_at = time.perf_counter()
        self._deltas: queue.Queue[Any] = queue.Queue()
        self._stopped = threading.Event()
        self._finished = threading.Event()

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._deltas.get()
            if item is _DONE:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def stop(self) -> None:
        """Ask the engine to end this answer before its next token (finish reason ``stopped``)."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> AnswerResult:
        """Block until finished and return the result."""
        if not self._finished.wait(timeout):
            raise TimeoutError("the answer did not finish in time")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    # engine side
    def _emit(self, delta: str) -> None:
        self._deltas.put(delta)

    def _finish(self, result: AnswerResult | None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self._finished.set()
        self._deltas.put(_DONE)


class AnswerEngine:
    """Starts answers: ``generate`` fills in the decoding parameters and hands the request to ``_start``.

    Parameters left out come from the settings the engine was made with (``Decoding.from_settings``);
    an engine applies what it can and stores what it applied with the answer (``AnswerResult.decoding``).
    """

    settings: Settings
    stream_type: ClassVar[type[Generation]] = Generation

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
        """Start one answer; ``tools`` (JSON schemas) go through the model's chat template."""
        decoding = Decoding.from_settings(
            self.settings,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
        generation = self.stream_type(GenerationRequest(messages=messages, seed=seed, tools=tools, **vars(decoding)))
        self._start(generation)
        return generation

    def _start(self, generation: Generation) -> None:
        """Begin writing the answer on the engine's thread; never block the caller."""
        raise NotImplementedError


class LocalModelEngine(AnswerEngine):
    """A local engine: answers, says who it is, and is warmed up once and closed once per process.

    What the comparison, the policies and the benchmarks use of it; ``engines.load_engine`` picks one.
    """

    kind: ClassVar[str]  # transformers | llamacpp | openai: stored with every local answer
    model_name: str
    model_revision: str | None
    dtype: str | None
    base_url_host: str | None = None
    gives_logprobs: bool = True
    entropy_from_top_k: int | None = None  # k where entropies come from a server's top-k log-probs
    tokenizer: Any = None  # has ``apply_chat_template`` where the chat template is local

    def warm_up(self) -> None:
        """Make the first attendee's answer as fast as the rest (and fail at start-up, not then)."""
        hello: list[Message] = [{"role": "user", "content": "Hi"}]
        first = self.generate(hello, max_new_tokens=4, temperature=0.0)
        second = self.generate([*hello, {"role": "assistant", "content": "Hello!"}, *hello], max_new_tokens=4)
        first.wait()
        second.wait()

    def close(self) -> None:
        """Free the engine (tests and benchmarks load several in one process)."""
