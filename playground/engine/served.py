"""The local model behind an OpenAI-compatible server: vLLM on a GPU, llama.cpp's server on a CPU.

Each answer is one streamed chat completion asking for ``logprobs`` with ``top_logprobs = k``; the
chosen token's log-prob comes back as is, and the entropy is computed from the top k (the sum over
them plus the leftover probability mass as one more outcome: a lower bound on the full entropy,
recorded as ``entropy_from_top_k = k`` so nobody mistakes it for the in-process figure).

Concurrency is the server's (vLLM and llama.cpp's ``llama-server`` batch continuously): each answer
streams on its own thread. Several servers of one model (``local_base_url`` naming several: ``handoff
serve`` starts one llama-server per CPU) share the answers through ``Routing``, and each answer records
the host of the server that wrote it. ``warm_up`` asks the server once whether it returns log-probs; a server
that does not (vLLM with ``--max-logprobs 0``, ``transformers serve``) still answers, but
``gives_logprobs`` is False, so the policies that need them refuse at start-up and the fallback
policy runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from typing import Any

import openai

from playground.engine.contract import Generation, LocalModelEngine, LocalResult
from playground.settings import Settings, url_host

Message = dict[str, str]
log = logging.getLogger(__name__)


def prompt_tokens(messages: list[Message]) -> int:
    """A prompt's length in tokens, estimated at four characters a token (the server's tokenizer is not here)."""
    return sum(len(str(message.get("content") or "")) for message in messages) // 4


def conversation_key(messages: list[Message]) -> str:
    """One conversation as far as ``messages`` go: equal keys, equal prompts."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class Routing:
    """Which of several servers writes each answer: the one with the least work outstanding once this answer
    is added, counting as free the part of its prompt that server already holds.

    Work is in tokens: each running answer's prompt and the most it may write. Counting answers alone sent
    the long prompts of 16 asked at once to one of two servers (750 prompt tokens against 450), which took
    3.1 s to read them where the other took 1.6 s. A follow-up repeats its conversation so far, which
    llama-server keeps in a slot after answering and does not read again (``cache_prompt``), so the server
    that wrote the last answer of a conversation reads only the new question: that saving counts in its
    favour. The last ``remembered`` conversations are kept, one key each.
    """

    def __init__(self, servers: int, remembered: int = 4096) -> None:
        self.outstanding = [0] * servers
        self._held: OrderedDict[str, int] = OrderedDict()  # conversation so far -> the server that holds it
        self._remembered = remembered
        self._lock = threading.Lock()

    def take(self, messages: list[Message], max_new_tokens: int) -> tuple[int, int]:
        """(the server for this answer, its cost there), the cost now counted as outstanding on it."""
        prompt = prompt_tokens(messages) + max_new_tokens
        with self._lock:
            holder = self._held.get(conversation_key(messages[:-1])) if len(messages) > 1 else None
            saved = prompt_tokens(messages[:-1]) if holder is not None else 0
            costs = [prompt - (saved if index == holder else 0) for index in range(len(self.outstanding))]
            index = min(range(len(costs)), key=lambda i: self.outstanding[i] + costs[i])
            self.outstanding[index] += costs[index]
            return index, costs[index]

    def release(self, index: int, cost: int) -> None:
        with self._lock:
            self.outstanding[index] -= cost

    def answered(self, index: int, messages: list[Message], text: str) -> None:
        """Server ``index`` now holds this conversation with its answer ``text``, as the next turn will send it."""
        key = conversation_key([*messages, {"role": "assistant", "content": text}])
        with self._lock:
            self._held[key] = index
            self._held.move_to_end(key)
            while len(self._held) > self._remembered:
                self._held.popitem(last=False)


class EngineUnavailable(RuntimeError):
    """The local model server cannot be reached or refuses our requests; the message says what to do."""


def top_k_entropy(top_logprobs: list[float]) -> float:
    """Entropy (nats) of the top-k distribution with the remaining mass as one more outcome.

    A lower bound on the full distribution's entropy: the tail's mass spread over many tokens would
    only add more.
    """
    probabilities = [math.exp(lp) for lp in top_logprobs]
    entropy = -sum(p * lp for p, lp in zip(probabilities, top_logprobs, strict=True))
    rest = 1.0 - sum(probabilities)
    if rest > 1e-12:
        entropy -= rest * math.log(rest)
    return entropy


class ServedEngine(LocalModelEngine):
    """A local model served over the OpenAI chat-completions API, with per-token log-probs."""

    kind = "openai"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url_host = settings.local_host
        self.model_name = settings.served_model_name
        self.model_revision: str | None = None  # set from the server's first answer where it reports one
        self.dtype: str | None = None  # the weights' type where the server reports it (``warm_up``)
        self.top_k = settings.local_top_logprobs
        self.gives_logprobs = True  # until warm_up asks the server
        self.tokenizer = None  # the chat template lives on the server
        key = settings.local_api_key.get_secret_value() if settings.local_api_key else "no-key"
        self.clients = [
            openai.OpenAI(base_url=url, api_key=key, timeout=settings.local_timeout_s, max_retries=0)
            for url in settings.local_base_urls
        ]
        self.hosts = [url_host(url) for url in settings.local_base_urls]  # what each answer records
        self.routing = Routing(len(self.clients))

    @property
    def entropy_from_top_k(self) -> int | None:
        return self.top_k if self.gives_logprobs else None

    def _start(self, generation: Generation) -> None:
        """One streamed completion on its own thread; the stream fills as chunks arrive.

        ``no_repeat_ngram_size`` is not an option of these servers: it is not applied, and the answer's
        stored decoding says so (None).
        """
        threading.Thread(target=self._stream, args=(generation,), name="served-answer", daemon=True).start()

    def warm_up(self) -> None:
        """Check every server answers, and whether they return log-probs (the policies ask ``gives_logprobs``)."""
        hello = [{"role": "user", "content": "Hi"}]
        for client, host in zip(self.clients[1:], self.hosts[1:], strict=True):  # the first: below, log-probs too
            try:
                self._probe(client, hello, logprobs=False)
            except openai.OpenAIError as error:
                raise EngineUnavailable(
                    f"The local model server at {host} does not answer chat completions "
                    f"for model {self.model_name!r} ({error}). Start it or fix HANDOFF_LOCAL_BASE_URL."
                ) from error
        try:
            self.gives_logprobs = bool(self._probe(self.clients[0], hello, logprobs=True))
        except openai.APIConnectionError as error:
            raise EngineUnavailable(
                f"The local model server at {self.hosts[0]} does not answer ({error}). "
                "Start it (`handoff serve` starts llama.cpp's server for a local URL) or fix HANDOFF_LOCAL_BASE_URL."
            ) from error
        except openai.APIStatusError as error:
            log.info("the local model server refused log-probs (%s); asking without", error.status_code)
            self.gives_logprobs = False
        self.dtype = self._served_dtype()
        if not self.gives_logprobs:
            try:
                self._probe(self.clients[0], hello, logprobs=False)
            except openai.OpenAIError as error:
                raise EngineUnavailable(
                    f"The local model server at {self.hosts[0]} does not answer chat completions "
                    f"for model {self.model_name!r}: {error}"
                ) from error
            log.warning(
                "The local model server at %s returns no per-token log-probs: the confidence policy and "
                "early handoff cannot run on it (llama.cpp's llama-server returns them; start vLLM with "
                "--max-logprobs %d).",
                self.base_url_host,
                self.top_k,
            )

    def _served_dtype(self) -> str | None:
        """The served weights' type where the server says: llama-server lists it as its model's ``meta.ftype``
        (``Q8_0`` for the copy ``handoff serve`` runs); vLLM does not, and the answers then record none."""
        try:
            for model in self.clients[0].models.list():
                if model.id == self.model_name:
                    meta = (model.model_extra or {}).get("meta") or {}
                    return str(meta["ftype"])[:16] if meta.get("ftype") else None
        except openai.OpenAIError:
            return None
        return None

    def _probe(self, client: openai.OpenAI, messages: list[Message], logprobs: bool) -> bool:
        options: dict[str, Any] = {"logprobs": True, "top_logprobs": self.top_k} if logprobs else {}
        response = client.chat.completions.create(
            model=self.model_name, messages=messages, max_tokens=2, temperature=0.0, **options
        )
        if response.system_fingerprint:
            self.model_revision = response.system_fingerprint[:100]
        choice = response.choices[0]
        return bool(choice.logprobs and choice.logprobs.content)

    def close(self) -> None:
        for client in self.clients:
            client.close()

    # --- one answer, on its own thread ---------------------------------------------------------
    def _stream(self, generation: Generation) -> None:
        request = generation.request
        index, cost = self.routing.take(request.messages, request.max_new_tokens)
        try:
            text = self._answer(generation, index)
        finally:
            self.routing.release(index, cost)
        if text is not None and len(self.clients) > 1:
            self.routing.answered(index, request.messages, text)

    def _answer(self, generation: Generation, index: int) -> str | None:
        """Stream one answer from server ``index`` into ``generation``; its text, None where it failed."""
        request = generation.request
        options: dict[str, Any] = {}
        if self.gives_logprobs:
            options.update(logprobs=True, top_logprobs=self.top_k)
        if request.seed is not None:
            options["seed"] = request.seed
        if request.tools:
            options["tools"] = request.tools
        # Not in the OpenAI schema: llama.cpp's server reads ``repeat_penalty`` (over its last 64
        # tokens), vLLM ``repetition_penalty``; each ignores the other's name. Always sent, so a
        # server's own default (llama-cpp-python's is 1.1) never stands in for ours.
        penalty = request.repetition_penalty
        options["extra_body"] = {"repeat_penalty": penalty, "repetition_penalty": penalty}
        parts: list[str] = []
        state: dict[str, Any] = {"finish_reason": None, "ttft_ms": 0.0, "usage": None, "model": None}
        stream = None
        try:
            stream = self.clients[index].chat.completions.create(
                model=self.model_name,
                messages=request.messages,  # type: ignore[arg-type]
                max_tokens=request.max_new_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                stream=True,
                stream_options={"include_usage": True},
                **options,
            )
            for chunk in stream:
                self._read_chunk(generation, chunk, parts, state)
                if generation.stopped:
                    state["finish_reason"] = "stopped"
                    break
        except Exception as error:  # noqa: BLE001 - handed to the caller's thread, as the other engines do
            generation._finish(None, error)
            return None
        finally:
            if stream is not None:
                stream.close()  # a stopped answer: the server sees the client leave and stops decoding
        usage = state["usage"]
        tokens_out = len(generation.logprobs) or getattr(usage, "completion_tokens", None) or len(parts)
        text = "".join(parts)
        generation._finish(
            LocalResult(
                text=text,
                model=state["model"] or self.model_name,
                model_revision=self.model_revision,
                dtype=self.dtype,
                tokens_in=getattr(usage, "prompt_tokens", None) or 0,
                tokens_out=tokens_out,
                ttft_ms=state["ttft_ms"],
                latency_ms=(time.perf_counter() - generation.submitted_at) * 1000,
                finish_reason=state["finish_reason"] or "stop",
                logprobs=list(generation.logprobs),
                entropies=list(generation.entropies),
                engine=self.kind,
                base_url_host=self.hosts[index],
                entropy_from_top_k=self.entropy_from_top_k,
                decoding=request.decoding.record(no_repeat_ngram_size=True),
            )
        )
        return text

    def _read_chunk(self, generation: Generation, chunk: Any, parts: list[str], state: dict[str, Any]) -> None:
        if getattr(chunk, "usage", None) is not None:
            state["usage"] = chunk.usage
        if getattr(chunk, "model", None):
            state["model"] = str(chunk.model)[:200]
        if getattr(chunk, "system_fingerprint", None):
            self.model_revision = chunk.system_fingerprint[:100]
        if not chunk.choices:
            return
        choice = chunk.choices[0]
        if choice.logprobs is not None and choice.logprobs.content:
            for token in choice.logprobs.content:
                top = [alternative.logprob for alternative in token.top_logprobs or []]
                generation.logprobs.append(token.logprob)
                generation.entropies.append(top_k_entropy(top) if top else 0.0)
        delta = choice.delta.content if choice.delta else None
        if delta:
            if not state["ttft_ms"]:
                state["ttft_ms"] = (time.perf_counter() - generation.submitted_at) * 1000
            parts.append(delta)
            generation._emit(delta)
        if choice.finish_reason:
            state["finish_reason"] = choice.finish_reason
