"""Run every benchmark in ``bench/`` and end with one line per target: ``name: measured (target) OK|MISS``.

    python -m bench                 # all of them (what ``make bench`` runs)
    python -m bench engine votes    # only these modules (also those left out of the default run: emulated_cpu)

Each module that defines ``main() -> list[Target]`` runs in a fresh process, so one module's memory
high-water mark, threads or crash cannot leak into the next one's figures. A module that fails
reports a MISS line saying so, and the others still run.
"""

from __future__ import annotations

import collections
import json
import os
import pkgutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Target, machine, report

FOLDER = Path(__file__).resolve().parent
_CHILD = """
import json, sys
from dataclasses import asdict
from importlib import import_module
module, out_path = sys.argv[1:3]
sys.argv = [module]  # each main() sees its defaults, as when run from its own command
targets = import_module(module).main()
if not isinstance(targets, list):
    raise SystemExit(f"{module}.main() must return a list of bench.common.Target, not {type(targets).__name__}")
with open(out_path, "w") as out:
    json.dump([asdict(t) for t in targets], out)
"""


def modules(everything: bool = False) -> list[str]:
    """Benchmark modules: those in bench/ that define a top-level ``main``. Those that say ``IN_MAKE_BENCH = False``
    (too long for every run, or needing extra tools) run only when named, unless ``everything``."""
    names = []
    for info in pkgutil.iter_modules([str(FOLDER)]):
        if info.name.startswith("_"):
            continue
        source = (FOLDER / f"{info.name}.py").read_text(encoding="utf-8")
        if "\ndef main(" in source and (everything or "\nIN_MAKE_BENCH = False" not in source):
            names.append(info.name)
    return sorted(names)


def run(name: str, package: str = "bench") -> list[Target]:
    """Run one module in its own process; a crash keeps the lines measured before it, plus a MISS naming it."""
    print(f"\n== {package}.{name}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result, partial = Path(folder) / "result.json", Path(folder) / "partial.jsonl"
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, f"{package}.{name}", str(result)],
            env={**os.environ, "BENCH_PARTIAL": str(partial)},
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        tail: collections.deque[str] = collections.deque(maxlen=40)
        assert process.stderr is not None
        for line in process.stderr:  # shown as it comes, and the end kept to name a crash
            sys.stderr.write(line)
            tail.append(line.rstrip())
        returncode = process.wait()
        data = result.read_text(encoding="utf-8") if result.exists() else ""
        measured = partial.read_text(encoding="utf-8").splitlines() if partial.exists() else []
    print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)
    if returncode == 0 and data:
        return [Target(**fields) for fields in json.loads(data)]
    targets = [Target(**json.loads(line)) for line in measured]
    targets.append(Target(f"{package}.{name} ran to the end ({crash_reason(returncode, list(tail))})", 0, 1))
    return targets


def crash_reason(returncode: int, stderr_tail: list[str]) -> str:
    """What killed a benchmark process, in words a reader can act on."""
    if returncode < 0:
        signal_name = signal.Signals(-returncode).name
        if signal_name == "SIGILL":
            return "crashed: SIGILL, illegal instruction: a native build for another CPU's instruction set"
        if signal_name == "SIGKILL":
            return "killed: SIGKILL, likely out of memory"
        return f"crashed: {signal_name}"
    last = next((line for line in reversed(stderr_tail) if line.strip()), "")
    return f"exit status {returncode}: {last[:200]}" if last else f"exit status {returncode}"


def main(argv: list[str]) -> int:
    names = argv or modules()
    unknown = sorted(set(names) - set(modules(everything=True)))
    if unknown:
        print(f"No benchmark module named {', '.join(unknown)}; choose from: {', '.join(modules(everything=True))}.")
        return 2
    print(f"machine: {machine()}", flush=True)
    targets = [target for name in names for target in run(name)]
    print(f"\n== {sum(t.ok for t in targets)}/{len(targets)} targets met ({machine()})", flush=True)
    report(targets)
    return 0  # a MISS is a finding to read, not a broken build: the lines above are the result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
