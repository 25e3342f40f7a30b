"""`make bench` keeps what a crashing benchmark measured and names the crash (issue: SIGILL lost lines)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bench.__main__ import run

ROOT = Path(__file__).resolve().parent.parent

CRASHING = """
import os, signal
from bench.common import Target

def main():
    Target("measured before the crash", 2.0, 1.0)
    Target("a known trade", 0.5, 1.0, why="the reason")
    os.kill(os.getpid(), signal.{signal})
"""


@pytest.mark.parametrize(("signal", "words"), [("SIGILL", "illegal instruction"), ("SIGSEGV", "SIGSEGV")])
def test_a_crashing_benchmark_keeps_its_lines_and_names_the_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signal: str, words: str
) -> None:
    package = tmp_path / "crashing_bench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "boom.py").write_text(CRASHING.replace("{signal}", signal))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(ROOT), *sys.path]))
    targets = run("boom", package="crashing_bench")
    assert [t.name for t in targets][0] == "measured before the crash" and targets[0].ok
    assert targets[1].line() == "a known trade: 0.5 (≥ 1) MISS: the reason"  # the reason crosses the process too
    assert words in targets[-1].name and not targets[-1].ok


def test_an_exception_is_named_by_its_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "failing_bench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "oops.py").write_text("def main():\n    raise RuntimeError('no llama.cpp here')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(ROOT), *sys.path]))
    [target] = run("oops", package="failing_bench")
    assert "exit status 1: RuntimeError: no llama.cpp here" in target.name and not target.ok


def test_a_miss_names_its_known_reason_and_an_ok_line_does_not() -> None:
    from bench.common import Target

    assert Target("t", 0.7, 1.0, "x", why="fewer threads").line() == "t: 0.7x (≥ 1x) MISS: fewer threads"
    assert Target("t", 1.7, 1.0, "x", why="fewer threads").line() == "t: 1.7x (≥ 1x) OK"


def test_a_module_left_out_of_make_bench_runs_only_when_named() -> None:
    """bench/emulated_cpu.py (QEMU, ~15-30 min) says IN_MAKE_BENCH = False: `make bench` skips it, naming it runs it."""
    from bench.__main__ import modules

    assert "emulated_cpu" not in modules() and "emulated_cpu" in modules(everything=True)
    assert "engine" in modules() and set(modules()) < set(modules(everything=True))
