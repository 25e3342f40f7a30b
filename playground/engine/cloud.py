"""The cloud side of handoff: the official ``openai`` client against any OpenAI-compatible server.

Failures never escape to the page: a timeout, rate limit, server error, refused connection or
malformed response ends the stream and is recorded as ``error_kind`` on the result, so the caller
can fall back to the local answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import openai

from playground.engine.model_store import resolve_model
from playground.settings import Settings

Message = dict[str, str]


@dataclass
class CloudResult:
    text: str
    model: str
    base_url_host: str
    tokens_in: int | None
    tokens_out: int | None
    ttft_ms: float | None
    latency_ms: float
    finish_reason: str | None
    retries: int
    error_kind: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None


def error_kind(error: BaseException) -> str:
    """A short, stable name for what went wrong, for storage and statistics."""
    if isinstance(error, openai.APITimeoutError):
        return "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection"
    if isinstance(error, openai.RateLimitError):
        return "rate_limited"
    if isinstance(error, openai.InternalServerError):
        return "server_error"
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return "auth"
    if isinstance(error, openai.APIStatusError):
        return f"http_{error.status_code}"
    return "malformed"


class CloudStream:
    """Iterate for text deltas; ``result`` is set when the iteration ends, successful or not."""

    def __init__(self, client: CloudClient, messages: list[Message]) -> None:
        self._client = client
        self._messages = messages
        self.result: CloudResult | None = None

    def __iter__(self) -> Iterator[str]:
        client = self._client
        started = time.perf_counter()
        parts: list[str] = []
        ttft_ms: float | None = None
        usage = None
        finish_reason = None
        kind = message = None
        try:
            stream = client.openai.chat.completions.create(
                model=client.model,
                messages=self._messages,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=client.settings.max_new_tokens,
            )
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish_reason = choice.finish_reason or finish_reason
                delta = choice.delta.content if choice.delta else None
                if delta:
                    if ttft_ms is None:
                        ttft_ms = (time.perf_counter() - started) * 1000
                    parts.append(delta)
                    yield delta
            if not parts:
                raise ValueError("the cloud returned an empty answer")
        except (openai.OpenAIError, ValueError, KeyError, TypeError, AttributeError) as error:
            kind, message = error_kind(error), f"{type(error).__name__}: {error}"[:500]
        self.result = CloudResult(
            text="".join(parts),
            model=client.model,
            base_url_host=client.settings.cloud_host,
            tokens_in=getattr(usage, "prompt_tokens", None),
            tokens_out=getattr(usage, "completion_tokens", None),
            ttft_ms=ttft_ms,
            latency_ms=(time.perf_counter() - started) * 1000,
            finish_reason=finish_reason,
            retries=0,
            error_kind=kind,
            error=message,
        )

    def wait(self) -> CloudResult:
        for _ in self:
            pass
        assert self.result is not None
        return self.result


class CloudClient:
    """Configured once from settings; safe to share across sessions."""

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        self.settings = settings
        self.model = model or settings.cloud_model or _default_model(settings)
        self.openai = openai.OpenAI(
            base_url=settings.resolved_cloud_base_url,
            api_key=settings.cloud_api_key,
            timeout=settings.cloud_timeout_s,
            max_retries=settings.cloud_max_retries,
        )

    def stream(self, messages: list[Message]) -> CloudStream:
        return CloudStream(self, messages)


def _default_model(settings: Settings) -> str:
    if settings.uses_standin:  # the stand-in serves the folder it was started with, by that name
        return resolve_model(settings.local_model, settings.model_cache_dir)
    return "gpt-4.1-mini"
