"""llama.cpp's own OpenAI-compatible server (``llama-server``) for the ``openai`` engine.

``handoff serve`` starts ``server_count`` of them (one per CPU, one thread each) beside the app when
``HANDOFF_LOCAL_ENGINE=openai`` (what ``auto`` picks on a CPU where ``make llama-cpp`` built it) points at
a local URL nobody answers yet, on the GGUF the ``llamacpp`` engine would load, under the model name the
engine asks for, and hands the app every server's URL; the engine spreads answers over them. ``make
llama-cpp`` builds it from the same llama-cpp-python source release, for this CPU, into the venv beside
``python``.

Each batches continuously: ``max_batch_size`` slots share one KV cache of ``llamacpp_n_ctx`` positions
(``--kv-unified``, as the in-process engine shares its cache), so attendees decode together in llama.cpp's
kernels while the app's process only reads their streams. Log-probs come with any request that asks for
them (no start-up switch, no cost to requests that do not).
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
from playground.engine.model_store import llama_cpp_gguf
from playground.hardware import llama_server_binary
from playground.settings import Settings

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class LlamaServerFailed(RuntimeError):
    """The llama.cpp server did not come up; the message carries the end of its log."""


def is_local(settings: Settings) -> bool:
    """True when every base URL of the openai engine is on this machine (so we may start the servers)."""
    return all(urlsplit(url).hostname in LOCAL_HOSTS for url in settings.local_base_urls)


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
    """Decoding threads of each ``llama-server``: ``HANDOFF_LLAMACPP_THREADS``, else one.

    llama.cpp's threads wait for each other at every operation, so one pre-empted thread stalls the
    rest, and the servers share the machine with the app replicas, PostgreSQL and the pages' streaming,
    which all wake up exactly while tokens stream: on a 2-core Zen 4 with other work running, two threads
    fell to 2-39 tok/s one stream where one thread kept 52-76 (bench/README.md, "llama-server's
    threads"). Several one-thread servers share no barrier: a pre-empted one stalls only its own answers.
    """
    return settings.llamacpp_threads or 1


def server_count(settings: Settings) -> int:
    """How many ``llama-server`` processes serve the openai engine: ``HANDOFF_LLAMACPP_SERVERS``, else one
    per ``server_threads`` of the usable CPUs (two on 2 cores; bench/README.md, "Two llama-servers")."""
    return settings.llamacpp_servers or max(1, usable_cpus() // server_threads(settings))


def replica_urls(settings: Settings) -> tuple[str, ...]:
    """The base URL of each server: the configured list where it names several, else ``server_count`` of them
    on consecutive ports from the configured one (``http://127.0.0.1:8767/v1``, ``…:8768/v1``, …)."""
    if len(settings.local_base_urls) > 1:
        return settings.local_base_urls
    parts = urlsplit(settings.local_base_urls[0])
    port = parts.port or 80
    netloc = parts.netloc.removesuffix(f":{port}") if parts.port else parts.netloc
    return tuple(parts._replace(netloc=f"{netloc}:{port + index}").geturl() for index in range(server_count(settings)))


def served_gguf(settings: Settings) -> Path:
    """The GGUF the servers run: the ``llamacpp`` engine's, or its Q8_0 copy where llama.cpp multiplies that one's
    type a row at a time (``model_store.llama_cpp_gguf``: the bundled Q4_1)."""
    return llama_cpp_gguf(gguf_path(settings), settings.model_cache_dir)


def server_command(settings: Settings, base_url: str) -> list[str]:
    """``llama-server`` answering at ``base_url``, on ``served_gguf``."""
    parts = urlsplit(base_url)
    threads = str(server_threads(settings))
    return [
        str(require_llama_server()),
        "--model",
        str(served_gguf(settings)),
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


def is_up(base_url: str) -> bool:
    """True when the server at ``base_url`` lists its models."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_llama_servers(settings: Settings, log_dir: Path, *, timeout_s: float = 120) -> list[subprocess.Popen[bytes]]:
    """Start a server at each of ``replica_urls`` (logs ``llama_server.log``, ``llama_server-2.log``, …) and wait
    until each lists its model; raises with the failing one's log tail (and stops the others) if one doesn't."""
    started: list[subprocess.Popen[bytes]] = []
    url = ""
    try:
        for index, url in enumerate(replica_urls(settings)):
            log_path = log_dir / ("llama_server.log" if index == 0 else f"llama_server-{index + 1}.log")
            started.append(launch(server_command(settings, url), log_path, lambda url=url: is_up(url), timeout_s))
    except BaseException as error:
        for process in started:
            stop(process)
        if isinstance(error, ServerDidNotStart):
            raise LlamaServerFailed(f"llama.cpp's server did not start at {url}:\n{error.tail}") from None
        raise
    return started


@contextmanager
def llama_servers_running(
    settings: Settings, log_dir: Path, *, timeout_s: float = 120
) -> Iterator[tuple[Settings, list[subprocess.Popen[bytes]]]]:
    """``start_llama_servers`` for the length of a block (a benchmark leg, a test), stopped when it ends; yields
    the settings with ``local_base_url`` naming every server, and their processes."""
    processes = start_llama_servers(settings, log_dir, timeout_s=timeout_s)
    try:
        yield served_by(settings, replica_urls(settings)), processes
    finally:
        for process in processes:
            stop(process)


def served_by(settings: Settings, urls: tuple[str, ...]) -> Settings:
    """``settings`` with the openai engine spreading its answers over ``urls``."""
    return settings.model_copy(update={"local_engine": "openai", "local_base_url": ",".join(urls)})
