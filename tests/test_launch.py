"""``launch`` starts a server and waits for it; when it does not come up, the failure says how the process ended."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from playground.engine.launch import ServerDidNotStart, launch, stop

# a stand-in for a llama-server built with instructions the CPU lacks: it says something, then dies of SIGILL
DIES_OF_SIGILL = """
import os, resource, signal
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
print("loading model", flush=True)
os.kill(os.getpid(), signal.SIGILL)
"""


def test_a_server_that_exits_before_answering_fails_with_its_exit_code_and_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "print('no model here'); raise SystemExit(3)"]
    with pytest.raises(ServerDidNotStart) as failed:
        launch(command, tmp_path / "server.log", lambda: False, timeout_s=30)
    assert failed.value.returncode == 3 and "no model here" in failed.value.tail


def test_a_server_killed_by_a_signal_fails_with_the_negative_signal(tmp_path: Path) -> None:
    with pytest.raises(ServerDidNotStart) as failed:
        launch([sys.executable, "-c", DIES_OF_SIGILL], tmp_path / "server.log", lambda: False, timeout_s=30)
    assert failed.value.returncode == -signal.SIGILL and "loading model" in failed.value.tail


def test_a_server_that_never_answers_is_stopped_and_fails_without_an_exit_code(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import time; print('still loading', flush=True); time.sleep(60)"]
    with pytest.raises(ServerDidNotStart) as failed:
        launch(command, tmp_path / "server.log", lambda: False, timeout_s=1)
    assert failed.value.returncode is None  # it was stopped at the deadline, not ended by itself


def test_a_server_that_answers_is_returned_running(tmp_path: Path) -> None:
    process = launch([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "server.log", lambda: True, 30)
    try:
        assert process.poll() is None
    finally:
        stop(process)
    assert process.returncode == -signal.SIGTERM
