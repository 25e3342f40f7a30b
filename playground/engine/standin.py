"""The local cloud stand-in: ``transformers serve`` on 127.0.0.1, a real OpenAI-compatible server.

With no API key configured, handoff talks to this server through the real ``openai`` client, so
the cloud path runs end to end offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from playground.engine.device import resolve_dtype
from playground.engine.launch import ServerDidNotStart, launch
from playground.engine.model_store import resolve_model
from playground.settings import Settings


class StandinFailed(RuntimeError):
    """The stand-in server did not come up; the message carries the end of its log."""


def standin_command(settings: Settings) -> list[str]:
    model = resolve_model(settings.local_model, settings.model_cache_dir)
    cli = Path(sys.executable).with_name("transformers")
    return [
        str(cli),
        "serve",
        model,
        "--host",
        settings.standin_host,
        "--port",
        str(settings.standin_port),
        "--dtype",
        resolve_dtype(settings.local_dtype, settings.local_device).dtype,
        "--device",
        settings.local_device,
    ]


def is_up(settings: Settings) -> bool:
    url = f"http://{settings.standin_host}:{settings.standin_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_standin(settings: Settings, log_path: Path, timeout_s: float = 300) -> subprocess.Popen[bytes]:
    """Start the server and wait until it answers its health check."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    try:
        return launch(standin_command(settings), log_path, lambda: is_up(settings), timeout_s, env=env)
    except ServerDidNotStart as failed:
        tail = failed.tail
    raise StandinFailed(f"the cloud stand-in did not start on port {settings.standin_port}:\n{tail}") from None
