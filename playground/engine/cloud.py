"""The cloud side of handoff: the official ``openai`` client against any OpenAI-compatible server.

Failures never escape to the page: a timeout, rate limit, server error, refused connection or
malformed response ends the stream and is recorded as ``error_kind`` on the result, so the caller
can fall back to the local answer. Transient failures (timeout, connection, 429, 5xx) are retried
with bounded exponential backoff (tenacity) while nothing has been streamed yet; the retries are
counted on the result. The client's own hidden retries are off so every attempt is accounted for.
A server that says when to come back (``Retry-After`` / ``retry-after-ms`` on a 429 or 503) is
obeyed: the next attempt waits at least that long, and a wait longer than ``cloud_backoff_max_s``
is not made at all (the attendee would be waiting; the answer falls back to local instead).
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import openai
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from playground.engine.contract import AnswerEngine, AnswerResult, Generation, Message
from playground.engine.model_store import resolve_model
from playground.engine.sampling import Decoding
from playground.settings import Settings

log = logging.getLogger(__name__)
RETRYABLE = frozenset({"timeout", "connection", "rate_limited", "server_error"})
# Kinds after which the provider produced nothing it bills for.
NOT_BILLED = frozenset({"connection", "rate_limited", "server_error", "auth"})


@dataclass(kw_only=True)
class CloudResult(AnswerResult):
    """A cloud answer, or how the call failed (recorded, never raised), with what it cost."""

    retries: int
    error_kind: str | None = None
    error: str | None = None
    cost: Decimal | None = None  # from reported usage; None when the usage is unknown
    price_version: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @property
    def surely_unbilled(self) -> bool:
        """True when the call certainly cost nothing (refused before any output)."""
        return self.cost is None and not self.text and self.error_kind in NOT_BILLED


class MalformedResponse(ValueError):
    """The server answered, but not with a usable chat completion."""


class _AfterFirstDelta(Exception):
    """Wraps an error raised once text was streamed: never retried (the text is already shown)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def error_kind(error: BaseException) -> str:
    """A short, stable name for what went wrong, for storage and statistics."""
    if isinstance(error, openai.APITimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(error, openai.APIConnectionError | httpx.TransportError):
        return "connection"
    if isinstance(error, openai.RateLimitError):
        return "rate_limited"
    if isinstance(error, openai.InternalServerError):
        return "server_error"
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return "auth"
    if isinstance(error, openai.APIStatusError):
        return "server_error" if error.status_code >= 500 else f"http_{error.status_code}"
    return "malformed"


def _retryable(error: BaseException) -> bool:
    return not isinstance(error, _AfterFirstDelta) and error_kind(error) in RETRYABLE


def retry_after_s(error: BaseException | None) -> float | None:
    """How long the server asked us to wait before trying again, when it said (seconds or a date)."""
    headers = getattr(getattr(error, "response", None), "headers", None)  # openai's own httpx Response
    if headers is None:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        if (value := headers.get("retry-after")) is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except (ValueError, TypeError, OverflowError):
        return None  # unreadable: the usual backoff applies


def _asked_wait(state: RetryCallState) -> float | None:
    return retry_after_s(state.outcome.exception()) if state.outcome is not None else None


CAUGHT = (openai.OpenAIError, httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError, _AfterFirstDelta)


class CloudStream(Generation):
    """One cloud answer: a ``Generation`` written on its own thread, that never raises.

    Its result is a ``CloudResult``, successful or not; ``logprobs`` and ``entropies`` stay empty
    (the cloud is not asked for them). ``stop()`` ends it after the current chunk.
    """

    result: CloudResult | None

    def wait(self, timeout: float | None = None) -> CloudResult:
        result = super().wait(timeout)
        assert isinstance(result, CloudResult)
        return result

    def _run(self, client: CloudClient) -> None:
        """The whole call, retries included; an unexpected failure is recorded as ``internal``."""
        state: dict = {"started": self.submitted_at}
        parts: list[str] = []
        try:
            result = self._call(client, state, parts)
        except Exception as error:  # noqa: BLE001 - a bug here must not hang the turn
            log.exception("cloud call failed unexpectedly")
            result = _result(client, parts, state, 0, error, kind="internal")
        self._finish(result)

    def _attempt(self, client: CloudClient, parts: list[str], state: dict) -> None:
        """One request to the provider, streamed into this answer."""
        request = self.request
        options = client.request_options()
        if request.seed is not None:
            options["seed"] = request.seed
        if request.tools:
            options["tools"] = request.tools
        if self.stopped:
            return
        stream = client.openai.chat.completions.create(
            model=client.model,
            messages=request.messages,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=request.max_new_tokens,
            **options,
        )
        try:
            for chunk in stream:
                if getattr(chunk, "usage", None) is not None:
                    state["usage"] = chunk.usage
                if self.stopped:
                    state["finish_reason"] = "stopped"
                    return
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                state["finish_reason"] = choice.finish_reason or state.get("finish_reason")
                delta = choice.delta.content if choice.delta else None
                if delta:
                    if state.get("ttft_ms") is None:
                        state["ttft_ms"] = (time.perf_counter() - state["started"]) * 1000
                    parts.append(delta)
                    self._emit(delta)
        except CAUGHT as error:
            if parts:
                raise _AfterFirstDelta(error) from error
            raise
        finally:
            stream.close()
        if not parts:
            raise MalformedResponse("the cloud returned no answer text")

    def _call(self, client: CloudClient, state: dict, parts: list[str]) -> CloudResult:
        settings = client.settings
        attempts = 0
        backoff = wait_exponential(multiplier=settings.cloud_backoff_s, max=settings.cloud_backoff_max_s)

        def wait(state: RetryCallState) -> float:
            return max(backoff(state), _asked_wait(state) or 0.0)

        def too_long(state: RetryCallState) -> bool:
            asked = _asked_wait(state)
            return asked is not None and asked > settings.cloud_backoff_max_s

        try:
            for attempt in Retrying(
                stop=stop_after_attempt(settings.cloud_max_retries + 1) | too_long,
                wait=wait,
                retry=retry_if_exception(_retryable),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    self._attempt(client, parts, state)
        except CAUGHT as error:
            return _result(
                client, parts, state, attempts, error.error if isinstance(error, _AfterFirstDelta) else error
            )
        return _result(client, parts, state, attempts)


class CloudClient(AnswerEngine):
    """Configured once from settings; safe to share across sessions and threads.

    A real cloud model answers at its provider's own sampling defaults: of a request's decoding
    parameters only the answer length (``max_new_tokens``) is sent; the stand-in gets the settings'
    ``Decoding`` (``request_options``).
    """

    stream_type = CloudStream

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        self.settings = settings
        self.model = model or settings.cloud_model or _default_model(settings)
        self.openai = openai.OpenAI(
            base_url=settings.resolved_cloud_base_url,
            api_key=settings.cloud_api_key,
            timeout=settings.cloud_timeout_s,
            max_retries=0,  # retries are ours (bounded, counted), see CloudStream
        )

    @property
    def decoding(self) -> dict[str, Any]:
        """What decides how the cloud decodes, as stored with its answers.

        The stand-in serves the bundled small model, so it gets the local engines' ``Decoding``
        (through ``transformers serve``'s ``generation_config``; ``cloud_local_decoding``). A real
        cloud model keeps its provider's defaults: only ``max_tokens`` is ours.
        """
        if self.settings.cloud_gets_local_decoding:
            return Decoding.from_settings(self.settings).record()
        return {"max_new_tokens": self.settings.max_new_tokens}

    def request_options(self) -> dict[str, Any]:
        """Options beyond ``max_tokens`` for each chat completion: the stand-in's generation config."""
        if not self.settings.cloud_gets_local_decoding:
            return {}
        decoding = Decoding.from_settings(self.settings)
        config: dict[str, Any] = {
            "max_new_tokens": decoding.max_new_tokens,
            "do_sample": decoding.temperature > 0,
            "repetition_penalty": decoding.repetition_penalty,
            "no_repeat_ngram_size": decoding.no_repeat_ngram_size,
        }
        if decoding.temperature > 0:
            config.update(temperature=decoding.temperature, top_p=decoding.top_p)
        return {"extra_body": {"generation_config": json.dumps(config)}}

    def generate(self, messages: list[Message], **decoding: Any) -> CloudStream:  # type: ignore[override]
        """Start one answer (``AnswerEngine.generate``); its result is a ``CloudResult``."""
        stream = super().generate(messages, **decoding)
        assert isinstance(stream, CloudStream)
        return stream

    def _start(self, generation: Generation) -> None:
        assert isinstance(generation, CloudStream)
        threading.Thread(target=generation._run, args=(self,), name="cloud-answer", daemon=True).start()

    def max_cost(self, messages: list[Message]) -> Decimal:
        """The most a call with these messages can cost: what the event budget reserves."""
        return self.settings.cloud_prices.max_cost(self.model, messages, self.settings.max_new_tokens)


def _default_model(settings: Settings) -> str:
    if settings.uses_standin:  # the stand-in serves the folder it was started with, by that name
        return resolve_model(settings.local_model, settings.model_cache_dir)
    return "gpt-4.1-mini"


def _result(
    client: CloudClient,
    parts: list[str],
    state: dict,
    attempts: int,
    error: BaseException | None = None,
    kind: str | None = None,
) -> CloudResult:
    """The call as it is stored: what it streamed, what it cost, and how it failed if it did."""
    settings = client.settings
    usage = state.get("usage")
    tokens_in = getattr(usage, "prompt_tokens", None)
    tokens_out = getattr(usage, "completion_tokens", None)
    prices = settings.cloud_prices
    return CloudResult(
        text="".join(parts),
        model=client.model,
        base_url_host=settings.cloud_host,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        ttft_ms=state.get("ttft_ms"),
        latency_ms=(time.perf_counter() - state["started"]) * 1000,
        finish_reason=state.get("finish_reason"),
        retries=max(0, attempts - 1),
        error_kind=kind or (None if error is None else error_kind(error)),
        error=None if error is None else f"{type(error).__name__}: {error}"[:500],
        cost=prices.cost(client.model, tokens_in, tokens_out)
        if tokens_in is not None and tokens_out is not None
        else None,
        price_version=prices.version,
        decoding=client.decoding,
    )
