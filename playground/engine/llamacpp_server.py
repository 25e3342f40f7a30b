"""llama.cpp's own OpenAI-compatible server (``llama-server``) for the ``openai`` engine.

``handoff serve`` starts it beside the app when ``HANDOFF_LOCAL_ENGINE=openai`` (what ``auto`` picks on a
CPU where ``make llama-cpp`` built it) points at a local URL nobody answers yet, on the GGUF the
``llamacpp`` engine would load, under the model name the engine asks for. ``make llama-cpp`` builds it
from the same llama-cpp-python source release, for this CPU, into the venv beside ``python``.

It batches continuously: ``max_batch_size`` slots share one KV cache of ``llamacpp_n_ctx`` positions
(``--kv-unified``, as the in-process engine shares its cache), so 16 attendees decode together in
llama.cpp's kernels while the app's process only reads their streams. Log-probs come with any request
that asks for them (no start-up switch, no cost to requests that do not).
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from feedback.cpus import usable_cpus
from playground.engine.launch import ServerDidNotStart, launch, stop
from playground.engine.llamacpp import INSTALL_HINT, LlamaCppMissing, gguf_path
from playground.hardware import llama_server_binary
from playground.settings import Settings

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class LlamaServerFailed(RuntimeError):
    """The llama.cpp server did not come up; the message carries the end of its log."""


def is_local(settings: Settings) -> bool:
    """True when the openai engine's base URL is on this machine (so we may start the server)."""
    return urlsplit(settings.local_base_url).hostname in LOCAL_HOSTS


def require_llama_server() -> Path:
    """The ``llama-server`` binary, or a start-up error that says how to build it."""
    binary = llama_server_binary()
    if binary is None:
        raise LlamaCppMissing(
            "HANDOFF_LOCAL_ENGINE=openai on a local URL starts llama.cpp's server (llama-server), which is not "
            f"built here. {INSTALL_HINT}"
        )
    return binary


def server_threads(settings: Settings) -> int:
    """Decoding threads for ``llama-server``: ``HANDOFF_LLAMACPP_THREADS``, else every CPU but one.

    The server shares the machine with the app replicas, PostgreSQL and the pages' streaming, which all
    wake up exactly while tokens stream. llama.cpp's threads wait for each other at every operation, so
    one pre-empted thread stalls the rest: on a 2-core Zen 4 with other work running, two threads fell
    to 2-39 tok/s one stream where one thread kept 52-76, and in the event hall one thread cut the local
    pane's p95 time to first token from 6.9 to 2.1 s (bench/README.md, "llama-server's threads").
    """
    return settings.llamacpp_threads or max(1, usable_cpus() - 1)


def server_command(settings: Settings) -> list[str]:
    parts = urlsplit(settings.local_base_url)
    threads = str(server_threads(settings))
    return [
        str(require_llama_server()),
        "--model",
        str(gguf_path(settings)),
        "--alias",
        settings.served_model_name,
        "--host",
        parts.hostname or "127.0.0.1",
        "--port",
        str(parts.port or 80),
        "--ctx-size",
        str(settings.llamacpp_n_ctx),
        "--parallel",
        str(settings.max_batch_size),
        "--kv-unified",
        "--threads",
        threads,
        "--threads-batch",
        threads,
        "--no-webui",
    ]


def is_up(settings: Settings) -> bool:
    url = settings.local_base_url.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_llama_server(settings: Settings, log_path: Path, *, timeout_s: float = 120) -> subprocess.Popen[bytes]:
    """Start the server and wait until it lists its model; raises with its log's tail if it doesn't."""
    try:
        return launch(server_command(settings), log_path, lambda: is_up(settings), timeout_s)
    except ServerDidNotStart as failed:
        tail = failed.tail
    raise LlamaServerFailed(f"llama.cpp's server did not start at {settings.local_base_url}:\n{tail}") from None


@contextmanager
def llama_server_running(
    settings: Settings, log_path: Path, *, timeout_s: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """``start_llama_server`` for the length of a block (a benchmark leg, a test), stopped when it ends."""
    process = start_llama_server(settings, log_path, timeout_s=timeout_s)
    try:
        yield process
    finally:
        stop(process)
