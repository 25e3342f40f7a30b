"""Start a local server process (the cloud stand-in, llama.cpp's server) and wait until it answers."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ServerDidNotStart(RuntimeError):
    """The process exited or never answered in time; ``tail`` is the end of its log, for the message.

    ``returncode``: its exit status when it exited by itself (negative: killed by that signal, e.g. SIGILL on
    a CPU without its instructions); None when it still ran at the deadline and was stopped."""

    def __init__(self, tail: str, returncode: int | None = None) -> None:
        super().__init__(tail)
        self.tail = tail
        self.returncode = returncode


def launch(
    command: list[str],
    log_path: Path,
    is_up: Callable[[], bool],
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Run ``command`` with its output in ``log_path``; return once ``is_up()``, else stop it and raise."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if is_up():
            return process
        time.sleep(0.3)
    returncode = process.poll()
    process.terminate()
    process.wait(timeout=10)
    raise ServerDidNotStart(log_path.read_text(errors="replace")[-2000:], returncode)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Ask ``process`` to end (SIGTERM), and kill it if it has not within ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
