"""``launch`` starts a server and waits for it; when it does not come up, the failure says how the process ended."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from playground.engine.launch import ServerDidNotStart, launch, stop

# a stand-in for llama-server: answers ``/v1/models`` and one chat completion on ``--port``
FAKE_SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply({"data": [{"id": "fake"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.reply({"choices": [{"message": {"content": "Paris"}}], "usage": {"completion_tokens": 1}})

HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), Handler).serve_forever()
"""
# a stand-in for a llama-server built with instructions the CPU lacks: it says something, then dies of SIGILL
DIES_OF_SIGILL = """
import os, resource, signal
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
print("loading model", flush=True)
os.kill(os.getpid(), signal.SIGILL)
"""


def _script(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{code}")
    path.chmod(0o755)
    return path


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


def test_the_emulated_check_reports_the_answer_of_a_server_that_comes_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bench.emulated_cpu.complete_under_emulation`` without QEMU (the emulation a no-op): it starts the server
    with ``launch``, asks for a completion and stops it."""
    from bench import emulated_cpu

    monkeypatch.setattr(emulated_cpu, "emulated", lambda command: command)
    binary = _script(tmp_path, "llama-server", FAKE_SERVER)
    result = emulated_cpu.complete_under_emulation(binary, tmp_path / "model.gguf", tmp_path / "server.log")
    assert result["answer"] == "Paris" and result["tokens"] == 1 and result["returncode"] is None


def test_the_emulated_check_keeps_the_sigill_of_a_server_that_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The negative control reads SIGILL from the return code: ``launch``'s failure must carry it."""
    from bench import emulated_cpu

    monkeypatch.setattr(emulated_cpu, "emulated", lambda command: command)
    binary = _script(tmp_path, "llama-server", DIES_OF_SIGILL)
    result = emulated_cpu.complete_under_emulation(binary, tmp_path / "model.gguf", tmp_path / "server.log")
    assert result["returncode"] == -signal.SIGILL and result["tokens"] == 0 and result["answer"] is None
    assert result["log_tail"] == ["loading model"]
