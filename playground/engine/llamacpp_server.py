"""llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``) for the ``openai`` engine.

``handoff serve`` starts it beside the app when ``HANDOFF_LOCAL_ENGINE=openai`` points at a local
URL nobody answers yet, on the GGUF the ``llamacpp`` engine would load, under the model name the
engine asks for. ``logits_all`` is on so chat completions return log-probs (it costs speed: every
prompt row's logits are kept); ``interrupt_requests`` is off so a new request never cuts a running
answer short.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from playground.engine.launch import ServerDidNotStart, launch
from playground.engine.llamacpp import gguf_path, require_llama_cpp
from playground.settings import Settings

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class LlamaServerFailed(RuntimeError):
    """The llama.cpp server did not come up; the message carries the end of its log."""


def is_local(settings: Settings) -> bool:
    """True when the openai engine's base URL is on this machine (so we may start the server)."""
    return urlsplit(settings.local_base_url).hostname in LOCAL_HOSTS


def server_command(settings: Settings, *, logprobs: bool = True) -> list[str]:
    parts = urlsplit(settings.local_base_url)
    threads = settings.llamacpp_threads or len(os.sched_getaffinity(0))
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf_path(settings)),
        "--model_alias",
        settings.served_model_name,
        "--host",
        parts.hostname or "127.0.0.1",
        "--port",
        str(parts.port or 80),
        "--n_ctx",
        "8192",
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--logits_all",
        str(logprobs),
        "--interrupt_requests",
        "False",
        "--verbose",
        "False",
    ]


def is_up(settings: Settings) -> bool:
    url = settings.local_base_url.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_llama_server(
    settings: Settings, log_path: Path, *, logprobs: bool = True, timeout_s: float = 120
) -> subprocess.Popen[bytes]:
    """Start the server and wait until it lists its model; raises with its log's tail if it doesn't."""
    require_llama_cpp()
    try:
        return launch(server_command(settings, logprobs=logprobs), log_path, lambda: is_up(settings), timeout_s)
    except ServerDidNotStart as failed:
        tail = failed.tail
    raise LlamaServerFailed(f"llama.cpp's server did not start at {settings.local_base_url}:\n{tail}") from None


@contextmanager
def llama_server_running(
    settings: Settings, log_path: Path, *, logprobs: bool = True, timeout_s: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """``start_llama_server`` for the length of a block (a benchmark leg, a test), stopped when it ends."""
    process = start_llama_server(settings, log_path, logprobs=logprobs, timeout_s=timeout_s)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
