"""An emulated AVX2-only CPU: do this project's native llama.cpp build and its ``auto`` dtype hold there? (issue 11)

No AVX2-only machine has been lent to us, so this runs the risky parts under QEMU user-mode emulation of an AVX2-only
CPU model (``HANDOFF_EMU_CPU``, default ``EPYC-Rome``, AMD Zen 2; ``EPYC-Milan`` and ``Haswell`` are AVX2-only too):

1. what ``-march=native`` (the Makefile's ``-DGGML_NATIVE=ON``) resolves to there: gcc's driver, run under QEMU,
   reads the emulated CPU's cpuid;
2. llama.cpp's ``llama-server`` built from the source release ``make llama-cpp`` uses, with the Makefile's own cmake
   arguments and flags, its compiler drivers run under QEMU (so ``-march=native`` means the emulated CPU; cc1 and the
   linker run natively); its instructions on AVX-512 registers (zmm) counted with objdump;
3. that server answering a chat completion through its OpenAI-compatible endpoint, run under the emulated CPU; and
   this machine's own build (the venv's ``llama-server``) under the same CPU, which must die with SIGILL where it
   holds AVX-512 instructions: the proof that the emulation enforces the instruction set, so the check can fail;
4. the local transformers engine's ``auto`` dtype (``playground.engine.device.resolve_dtype``) decided by this code
   under the emulated CPU, and natively for contrast.

This is emulation, not a real AVX2 machine: QEMU's timings say nothing about one, only what runs and what is chosen.

    python -m bench.emulated_cpu          # or: python -m bench emulated_cpu (not in `make bench`'s default run)
    HANDOFF_EMU_CPU=Haswell python -m bench.emulated_cpu

Needs Linux on x86-64, ``qemu-x86_64`` (Debian: ``apt-get install qemu-user``; QEMU >= 7.2 emulates AVX2), gcc/g++,
cmake, make and objdump. Takes ~15-30 min on 2 cores, most of it the build (4-15 min, kept for later runs in
``HANDOFF_EMU_BUILD``, default ``~/.cache/handoff-emulated-cpu``) and importing torch under emulation (1-3 min).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.common import Target, cpu_model, free_port, report
from feedback.cpus import usable_cpus
from playground.engine.launch import ServerDidNotStart, launch, stop

IN_MAKE_BENCH = False  # ~15-30 min and needs qemu-user: run it by name (bench/__main__.py)

ROOT = Path(__file__).resolve().parent.parent
CPU = os.environ.get("HANDOFF_EMU_CPU", "EPYC-Rome")
QEMU = os.environ.get("HANDOFF_QEMU", "qemu-x86_64")
BUILD_ROOT = Path(os.environ.get("HANDOFF_EMU_BUILD") or Path.home() / ".cache" / "handoff-emulated-cpu")
SERVER_TIMEOUT_S = float(os.environ.get("HANDOFF_EMU_TIMEOUT_S", "1200"))  # loading and decoding under TCG is slow


def emulated(command: list[str]) -> list[str]:
    return [QEMU, "-cpu", CPU, *command]


def say(line: str) -> None:
    print(f"   {line}", flush=True)


def qemu_version() -> str:
    first = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    return first.split("version", 1)[-1].strip()


def native_target(compiler: list[str]) -> tuple[str, set[str]]:
    """What ``-march=native`` resolves to for ``compiler``: the -march name and the -m features it enables.

    gcc's driver expands ``-march=native`` from cpuid into the flags it passes to cc1; ``-###`` prints them.
    """
    run = subprocess.run(
        [*compiler, "-march=native", "-###", "-x", "c", "-c", os.devnull, "-o", os.devnull],
        capture_output=True,
        text=True,
        check=True,
    )
    cc1 = next(line for line in run.stderr.splitlines() if "cc1" in line and "-march=" in line)
    flags = [token.strip('"') for token in shlex.split(cc1) if token.strip('"').startswith("-m")]
    march = next(flag.split("=", 1)[1] for flag in flags if flag.startswith("-march="))
    enabled = {flag[2:] for flag in flags if "=" not in flag and not flag.startswith("-mno-")}
    return march, enabled


def makefile_llama_flags() -> dict[str, str]:
    """The Makefile's llama.cpp build settings, read from the Makefile itself (what ``make llama-cpp`` uses here)."""
    names = ("LLAMA_CMAKE_ARGS", "LLAMA_CFLAGS", "LLAMA_SERVER_CMAKE_ARGS")
    printer = "print:\n\t@echo '" + "|".join(f"$({name})" for name in names) + "'\n"
    out = subprocess.run(
        ["make", "--no-print-directory", "-s", "-f", "Makefile", "-f", "-", "print"],
        input=printer,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return dict(zip(names, out.split("|"), strict=True))


def source_release(folder: Path) -> Path:
    """The llama-cpp-python source release, as the Makefile downloads it (its vendor/llama.cpp is what it builds)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        + ["llama-cpp-python>=0.3", "-d", str(folder)],
        check=True,
    )
    return max(folder.glob("llama_cpp_python-*.tar.gz"), key=lambda p: p.stat().st_mtime)


def build_for_emulated_cpu(tarball: Path, settings: dict[str, str]) -> tuple[Path, bool]:
    """``llama-server`` built with the Makefile's settings, its compilers seeing the emulated CPU; (binary, reused)."""
    key = hashlib.sha256(f"{CPU} {tarball.name} {json.dumps(settings, sort_keys=True)}".encode()).hexdigest()[:12]
    folder = BUILD_ROOT / f"{CPU}-{tarball.name.removesuffix('.tar.gz')}-{key}"
    binary = folder / "build" / "bin" / "llama-server"
    if binary.is_file():
        return binary, True
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "cc").mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(folder / "src", filter="data")
    wrappers = {}
    for variable, name in (("CC", "gcc"), ("CXX", "g++")):
        real = shutil.which(name)
        if real is None:
            raise SystemExit(f"{name} is not installed: the build needs gcc and g++")
        wrapper = folder / "cc" / name
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(QEMU)} -cpu {shlex.quote(CPU)} {shlex.quote(real)} "$@"\n')
        wrapper.chmod(0o755)
        wrappers[variable] = str(wrapper)
    source = next((folder / "src").glob("llama_cpp_python-*/vendor/llama.cpp"))
    cflags = settings["LLAMA_CFLAGS"]
    env = {**os.environ, **wrappers, "CFLAGS": cflags, "CXXFLAGS": cflags}
    arguments = shlex.split(settings["LLAMA_CMAKE_ARGS"]) + shlex.split(settings["LLAMA_SERVER_CMAKE_ARGS"])
    say(f"cmake {' '.join(arguments)} (CC/CXX: gcc/g++ under {QEMU} -cpu {CPU}; CFLAGS '{cflags}')")
    for name, step in (
        ("cmake", ["cmake", "-S", str(source), "-B", str(folder / "build"), *arguments]),
        (
            "build",
            ["cmake", "--build", str(folder / "build"), "--target", "llama-server", "-j", str(usable_cpus())],
        ),
    ):
        log = folder / f"{name}.log"
        with log.open("w") as out:
            if subprocess.run(step, env=env, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                tail = log.read_text(errors="replace").splitlines()[-30:]
                raise SystemExit(f"{' '.join(step[:3])} failed:\n" + "\n".join(tail))
    return binary, False


def zmm_instructions(binary: Path) -> int:
    """Instructions in ``binary`` that use AVX-512's zmm registers (objdump's disassembly)."""
    process = subprocess.Popen(["objdump", "-d", "--no-show-raw-insn", str(binary)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    count = sum(1 for line in process.stdout if "%zmm" in line)
    if process.wait() != 0:
        raise SystemExit(f"objdump could not read {binary}")
    return count


def complete_under_emulation(binary: Path, gguf: Path, log_path: Path) -> dict[str, object]:
    """Start ``binary`` as llama-server under the emulated CPU and ask it for a short chat completion.

    Returns what happened: ``returncode`` (None while it still runs; negative: killed by that signal), ``answer``,
    ``tokens``, ``seconds`` (start to answer), and the log's last lines.
    """
    port = free_port()
    from playground.engine.llamacpp_server import is_up, server_threads
    from playground.settings import Settings

    threads = str(server_threads(Settings()))  # as the app starts each server
    command = [str(binary), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--ctx-size", "512", "--parallel", "1", "--threads", threads, "--threads-batch", threads, "--no-webui"]
    base = f"http://127.0.0.1:{port}/v1"
    result: dict[str, object] = {"returncode": None, "answer": None, "tokens": 0}
    started = time.perf_counter()
    deadline = started + SERVER_TIMEOUT_S
    try:  # up: it lists its model (``llamacpp_server.is_up``, the app's own test)
        process = launch(emulated(command), log_path, lambda: is_up(base), SERVER_TIMEOUT_S)
    except ServerDidNotStart as failed:  # it died (SIGILL: an instruction the emulated CPU lacks), or never answered
        result["returncode"] = failed.returncode
    else:
        try:
            result["loaded_s"] = round(time.perf_counter() - started, 1)
            body = {
                "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                "max_tokens": 8,
                "temperature": 0,
            }
            request = urllib.request.Request(
                f"{base}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=max(1.0, deadline - time.perf_counter())) as response:
                    answer = json.load(response)
                result["answer"] = answer["choices"][0]["message"]["content"]
                result["tokens"] = int(answer["usage"]["completion_tokens"])
            except (urllib.error.URLError, OSError, KeyError, ValueError) as failed:
                result["error"] = repr(failed)
            result["seconds"] = round(time.perf_counter() - started, 1)
            time.sleep(1)  # a crash while answering shows in the return code
            result["returncode"] = process.poll()
        finally:
            if process.poll() is None:
                stop(process)
    lines = log_path.read_text(errors="replace").splitlines()
    result["log_tail"] = [line for line in lines if "TCG doesn't support" not in line][-3:]
    return result


DTYPE_CODE = """
import json, logging, sys, torch
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
from playground.engine.device import resolve_dtype
from playground.hardware import NATIVE_BF16_FLAGS, cpu_flags
choice = resolve_dtype("auto", "cpu")
print(json.dumps({"dtype": choice.dtype, "reason": choice.reason,
                  "torch_capability": torch.backends.cpu.get_cpu_capability(),
                  "proc_cpuinfo_bf16": [f for f in NATIVE_BF16_FLAGS if f in cpu_flags()]}))
"""


def auto_dtype(command_prefix: list[str]) -> dict[str, str]:
    """The ``auto`` dtype this checkout's code picks, run as ``command_prefix + [python, ...]`` (emulated or not)."""
    run = subprocess.run(
        [*command_prefix, sys.executable, "-c", DTYPE_CODE],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=SERVER_TIMEOUT_S,
    )
    if run.returncode != 0:
        raise SystemExit(f"the dtype decision failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> list[Target]:
    from playground.engine.llamacpp_server import served_gguf
    from playground.hardware import llama_server_binary
    from playground.settings import Settings

    if shutil.which(QEMU) is None:
        raise SystemExit(f"{QEMU} is not installed (Debian: apt-get install qemu-user)")
    say(f"emulation, not a real AVX2 machine: QEMU {qemu_version()} user mode, -cpu {CPU}, on a {cpu_model()} host")
    targets: list[Target] = []

    # 1. what -march=native gives on the emulated CPU, and here
    march, enabled = native_target(emulated([shutil.which("gcc") or "gcc"]))
    host_march, host_enabled = native_target(["gcc"])
    avx512 = sorted(flag for flag in enabled if flag.startswith("avx512"))
    say(f"gcc -march=native under {CPU}: -march={march}; enabled: {' '.join(sorted(enabled))}")
    say(
        f"gcc -march=native on this host: -march={host_march}; AVX-512 features: "
        f"{' '.join(sorted(f for f in host_enabled if f.startswith('avx512'))) or 'none'}"
    )
    targets.append(Target(f"{CPU}: -march=native ({march}) enables AVX2", float("avx2" in enabled), 1))
    targets.append(Target(f"{CPU}: -march=native enables AVX-512 features", len(avx512), 0, higher_is_better=False))
    native_bf16 = bool({"avx512bf16", "amx-bf16"} & enabled)

    # 2. llama-server built the Makefile's way for that CPU
    settings = makefile_llama_flags()
    tarball = source_release(BUILD_ROOT / "src")
    started = time.perf_counter()
    binary, reused = build_for_emulated_cpu(tarball, settings)
    say(f"{binary} from {tarball.name}: {'reused' if reused else f'built in {time.perf_counter() - started:.0f} s'}")
    zmm = zmm_instructions(binary)
    say(f"its instructions on zmm (AVX-512) registers: {zmm}")
    targets.append(Target(f"{CPU} build of llama-server: zmm (AVX-512) instructions", zmm, 0, higher_is_better=False))

    # 3. it answers under the emulated CPU; this machine's own build is the negative control
    gguf = served_gguf(Settings())  # the file the app serves (a Q8_0 copy): the block kernels run on its prompt
    with tempfile.TemporaryDirectory() as folder:
        served = complete_under_emulation(binary, gguf, Path(folder) / "emulated-build.log")
        say(f"{CPU} build under {QEMU} -cpu {CPU}: {json.dumps(served)}")
        tokens = float(str(served["tokens"]))
        targets.append(Target(f"{CPU} build of llama-server under emulated {CPU}: tokens answered", tokens, 1))
        own = llama_server_binary()
        if own is None:
            say("this machine has no llama-server built (make llama-cpp): no negative control")
        else:
            own_zmm = zmm_instructions(own)
            say(f"this machine's build {own}: {own_zmm} zmm (AVX-512) instructions")
            control = complete_under_emulation(own, gguf, Path(folder) / "own-build.log")
            say(f"this machine's build under {QEMU} -cpu {CPU}: {json.dumps(control)}")
            code = control["returncode"]
            died = isinstance(code, int) and code == -signal.SIGILL
            if own_zmm:
                targets.append(
                    Target(f"this machine's AVX-512 llama-server under emulated {CPU}: SIGILL", float(died), 1)
                )
            else:
                say("this machine's build has no AVX-512 instructions, so it is expected to run: no negative control")

    # 4. the auto dtype, decided under the emulated CPU and here
    here = auto_dtype([])
    say(f"auto dtype natively: {json.dumps(here)}")
    started = time.perf_counter()
    there = auto_dtype(emulated([]))
    say(f"auto dtype under {QEMU} -cpu {CPU} ({time.perf_counter() - started:.0f} s): {json.dumps(there)}")
    if native_bf16:
        say(f"{CPU} has native bf16 ({' '.join(sorted({'avx512bf16', 'amx-bf16'} & enabled))}): a probe decides")
    else:
        targets.append(
            Target(
                f"auto dtype under emulated {CPU} (no native bf16) is float32", float(there["dtype"] == "float32"), 1
            )
        )
    return targets


if __name__ == "__main__":
    report(main())
