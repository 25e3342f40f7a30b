"""The local engines side by side on the bundled model, in one run on this machine.

    python -m bench.engines                                  # transformers, llamacpp in process, openai on llama-server
    python -m bench.engines --new-tokens 32                  # shorter answers (a quick look)
    python -m bench.engines --sessions 1,4,16 --dtypes bfloat16,float32 --engines transformers,llamacpp

For each engine (``HANDOFF_LOCAL_ENGINE``; transformers once per ``--dtypes``): one stream (tokens/s
counted from submit to the last token, so prefill is included, and time to first token), then each
``--sessions`` count of requests submitted together (aggregate tokens/s, p50/p95 time to first token,
and the median attendee's own tokens/s after their first token), then 16 sessions arriving as a
Poisson process, each with a follow-up (p95 time to first token, as ``bench.engine``). The ``openai``
engine talks to llama.cpp's ``llama-server`` started here on a free port (continuous batching over
``max_batch_size`` slots, log-probs asked for on every request), as ``handoff serve`` starts it. llama.cpp's own greedy loop on the same GGUF (``bench/llama_cpp_baseline.py``,
no log-probs, every prompt prefilled in one batch) is the yardstick at every session count. Greedy
decoding throughout. The targets are issue 11's, for the engine ``HANDOFF_LOCAL_ENGINE=auto`` picks here.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import Target, machine, on_free_ports, percentile, report
from bench.prompts import chats
from feedback.cpus import usable_cpus
from playground.engine.contract import LocalModelEngine
from playground.engine.engines import load_engine
from playground.hardware import choose_engine, cpu_flags, llama_cpp_installed, llama_server_binary
from playground.settings import Settings

SINGLE_PROMPTS = 4
POISSON_SESSIONS = 16


@dataclass
class Figures:
    tokens_per_s: float  # aggregate
    ttft_p50_s: float
    ttft_p95_s: float
    attendee_tokens_per_s: float = float("nan")  # median request: tokens after the first / time after the first


def _run(engine: LocalModelEngine, prompts: list[list[dict[str, str]]], new_tokens: int) -> Figures:
    """All prompts submitted at once, each streamed by its own reader, as sessions do."""
    started = time.perf_counter()
    generations = [engine.generate(m, max_new_tokens=new_tokens, temperature=0.0) for m in prompts]
    readers = [threading.Thread(target=lambda g=g: [None for _ in g]) for g in generations]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    elapsed = time.perf_counter() - started
    results = [g.wait() for g in generations]
    ttfts = [r.ttft_ms / 1000 for r in results]
    tokens = sum(r.tokens_out for r in results)
    own = [(r.tokens_out - 1) * 1000 / (r.latency_ms - r.ttft_ms) for r in results if r.latency_ms > r.ttft_ms]
    return Figures(tokens / elapsed, percentile(ttfts, 50), percentile(ttfts, 95), percentile(own, 50))


def single_stream(engine: LocalModelEngine, new_tokens: int) -> Figures:
    """One request at a time over a few prompts: tokens/s over all of them, TTFT p50/p95."""
    tokens = 0
    seconds = 0.0
    ttfts = []
    own = []
    for messages in chats(SINGLE_PROMPTS):
        started = time.perf_counter()
        generation = engine.generate(messages, max_new_tokens=new_tokens, temperature=0.0)
        for _ in generation:
            pass
        seconds += time.perf_counter() - started
        result = generation.wait()
        tokens += result.tokens_out
        ttfts.append(result.ttft_ms / 1000)
        if result.latency_ms > result.ttft_ms:
            own.append((result.tokens_out - 1) * 1000 / (result.latency_ms - result.ttft_ms))
    return Figures(tokens / seconds, percentile(ttfts, 50), percentile(ttfts, 95), percentile(own, 50))


def measure(engine: LocalModelEngine, name: str, new_tokens: int, sessions: tuple[int, ...]) -> dict[int, Figures]:
    """One stream, then each session count together, then the Poisson arrivals (key ``-1``)."""
    from bench.engine import staggered

    engine.warm_up()
    figures: dict[int, Figures] = {}
    for n in sessions:
        figures[n] = single_stream(engine, new_tokens) if n == 1 else _run(engine, chats(n), new_tokens)
        f = figures[n]
        print(
            f"{name:<34} {n:>2} at once: {f.tokens_per_s:7.1f} tok/s, TTFT p50 {f.ttft_p50_s:6.3f} s, "
            f"p95 {f.ttft_p95_s:6.3f} s, attendee {f.attendee_tokens_per_s:6.1f} tok/s",
            flush=True,
        )
    started = time.perf_counter()
    ttfts = staggered(engine, sessions=POISSON_SESSIONS, mean_gap_s=0.5)
    figures[-1] = Figures(float("nan"), percentile(ttfts, 50), percentile(ttfts, 95))
    print(
        f"{name:<34} {POISSON_SESSIONS} Poisson-arriving sessions (+ follow-ups, 128 tokens, sampled): "
        f"TTFT p50 {figures[-1].ttft_p50_s:6.3f} s, p95 {figures[-1].ttft_p95_s:6.3f} s "
        f"({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    return figures


def bare(sessions: tuple[int, ...], new_tokens: int, thread_counts: tuple[int, ...]) -> dict[int, Figures]:
    """llama.cpp's own batched greedy loop at each session count, the faster of one thread and every CPU
    (one stream: the mean of two prompts): the best llama.cpp itself does here, as the yardstick."""
    from bench.llama_cpp_baseline import batched_run

    figures = {}
    for n in sessions:
        best = None
        for threads in thread_counts:
            if n == 1:
                runs = [batched_run(chats(SINGLE_PROMPTS)[i : i + 1], new_tokens, threads) for i in range(2)]
            else:
                runs = [batched_run(chats(n), new_tokens, threads)]
            tokens_per_s = sum(r[0] for r in runs) / len(runs)
            first = sum(r[1] for r in runs) / len(runs)
            print(
                f"{'llama.cpp bare greedy loop':<34} {n:>2} at once, {threads} thread(s): {tokens_per_s:7.1f} tok/s, "
                f"first tokens {first:6.3f} s",
                flush=True,
            )
            if best is None or tokens_per_s > best.tokens_per_s:
                best = Figures(tokens_per_s, first, first)
        figures[n] = best
    return figures


def table(results: dict[str, dict[int, Figures]], sessions: tuple[int, ...]) -> str:
    """The scaling table for bench/README.md: aggregate tok/s, attendee tok/s and TTFT p95 per session count."""
    lines = [
        "| engine | " + " | ".join(f"{n} at once" for n in sessions) + " | 16 Poisson, TTFT p95 |",
        "| --- |" + " --- |" * (len(sessions) + 1),
    ]
    for name, figures in results.items():
        cells = []
        for n in sessions:
            f = figures.get(n)
            if f is None:
                cells.append("")
            elif name == "llama.cpp bare loop":
                cells.append(f"{f.tokens_per_s:.1f} ({f.ttft_p95_s:.2f} s)")
            else:
                cells.append(f"{f.tokens_per_s:.1f} / {f.attendee_tokens_per_s:.1f} ({f.ttft_p95_s:.2f} s)")
        poisson = figures.get(-1)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {f'{poisson.ttft_p95_s:.2f} s' if poisson else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Target]:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per answer (default 64)")
    parser.add_argument(
        "--sessions", default="1,2,4,8,16,32", help="session counts at once (default 1,2,4,8,16,32: issue 11's table)"
    )
    parser.add_argument("--dtypes", default="auto", help="transformers dtypes, comma-separated (default auto)")
    parser.add_argument("--engines", default="transformers,llamacpp,openai", help="engines, comma-separated")
    parser.add_argument(
        "--bare-threads", default="1,all", help="thread counts for llama.cpp's bare loop (default 1,all: the faster)"
    )
    args = parser.parse_args(argv if argv is not None else [])
    new_tokens = args.new_tokens
    sessions = tuple(sorted({1, 16, *(int(n) for n in args.sessions.split(","))}))
    engines = args.engines.split(",")
    print(f"machine: {machine()}; {new_tokens} new tokens per answer, greedy", flush=True)
    base = Settings(max_batch_size=max(sessions), max_new_tokens=new_tokens, local_engine="transformers")
    results: dict[str, dict[int, Figures]] = {}

    if "transformers" in engines:
        for dtype in args.dtypes.split(","):
            engine = load_engine(base.model_copy(update={"local_engine": "transformers", "local_dtype": dtype}))
            results[f"transformers {engine.dtype}"] = measure(
                engine, f"transformers ({engine.dtype})", new_tokens, sessions
            )
            engine.close()
    if "llamacpp" in engines:
        engine = load_engine(base.model_copy(update={"local_engine": "llamacpp"}))
        results["llamacpp"] = measure(engine, f"llamacpp in process ({engine.dtype})", new_tokens, sessions)
        print(
            f"llamacpp threads: {engine.threads} per token, {engine.threads_batch} per batch ({engine.threads_reason})"
        )
        engine.close()
    all_cpus = usable_cpus()
    thread_counts = tuple(sorted({all_cpus if t == "all" else int(t) for t in args.bare_threads.split(",")}))
    results["llama.cpp bare loop"] = bare(sessions, new_tokens, thread_counts)

    if "openai" in engines:
        from playground.engine.llamacpp_server import llama_servers_running

        with (
            tempfile.TemporaryDirectory() as folder,
            llama_servers_running(on_free_ports(base), Path(folder)) as (
                served,
                processes,
            ),
        ):
            engine = load_engine(served)
            label = f"openai -> {len(processes)} llama-server(s) (log-probs)"
            results["openai"] = measure(engine, label, new_tokens, sessions)
            engine.close()

    print(table(results, sessions), flush=True)
    return targets(results)


# Why the in-process llamacpp engine can miss its own targets (it is not what ``auto`` picks on a CPU).
IN_PROCESS_FILE = (
    "the in-process engine reads the bundled Q4_1 file, whose rows llama.cpp's CPU backend multiplies one at a time "
    "(no block kernel), so 16 rows cost nearly 16 steps; it keeps that file for log-probs that do not depend on the "
    "batch. The yardstick loop reads the Q8_0 copy llama-server serves; `auto` picks llama.cpp's server on a CPU"
)


def _served_threads_trade(key: str) -> str:
    """Why llama-server's batched figure can trail llama.cpp's own loop on all CPUs: several one-thread servers,
    each decoding its share of the answers, by design."""
    if key != "openai":
        return ""
    from playground.engine.llamacpp_server import server_count, server_threads
    from playground.settings import Settings

    settings = Settings()
    servers, threads, cpus = server_count(settings), server_threads(settings), usable_cpus()
    return (
        f"{servers} llama-server(s) of {threads} thread(s) each decode their share of the 16 answers per step where "
        f"llama.cpp's loop decodes all 16 in one step on {cpus} threads (the block kernels gain with rows); one server "
        "on every CPU stalls at its barriers under load (HANDOFF_LLAMACPP_SERVERS, HANDOFF_LLAMACPP_THREADS; "
        'bench/README.md, "Two llama-servers")'
    )


def targets(results: dict[str, dict[int, Figures]]) -> list[Target]:
    """Issue 11's targets for the engine ``auto`` picks on this CPU, against llama.cpp's bare loop."""
    auto = choose_engine(
        "auto", "cpu", "auto", True, cpu_flags(), llama_cpp_installed(), llama_server_binary() is not None
    )
    if auto.kind == "transformers":
        from playground.engine.device import resolve_dtype

        key = f"transformers {resolve_dtype('auto', 'cpu').dtype}"
    else:
        key = auto.kind
    default, yardstick = results.get(key), results["llama.cpp bare loop"]
    found: list[Target] = []
    if default is not None:
        found += [
            Target(
                f"engines: default engine ({key}) one stream vs llama.cpp one stream",
                default[1].tokens_per_s / yardstick[1].tokens_per_s,
                0.5,
                "x",
            ),
            Target(
                f"engines: default engine ({key}) 16 together vs llama.cpp's batched loop",
                default[16].tokens_per_s / yardstick[16].tokens_per_s,
                1.0,
                "x",
                why=_served_threads_trade(key),
            ),
            Target(
                f"engines: default engine ({key}) {POISSON_SESSIONS} Poisson-arriving sessions, p95 time to first token",
                default[-1].ttft_p95_s,
                1.0,
                " s",
                False,
            ),
        ]
    if "llamacpp" in results:
        llama = results["llamacpp"]
        found += [
            Target(
                "engines: llamacpp one stream vs llama.cpp's bare loop (log-prob + entropy cost)",
                llama[1].tokens_per_s / yardstick[1].tokens_per_s,
                0.9,
                "x",
                why=f"{IN_PROCESS_FILE}; and each token's log-prob and entropy over the vocabulary",
            ),
            Target(
                "engines: llamacpp 16 together vs one stream",
                llama[16].tokens_per_s / llama[1].tokens_per_s,
                2.0,
                "x",
                why=IN_PROCESS_FILE,
            ),
            Target(
                "engines: llamacpp 16 together p95 time to first token",
                llama[16].ttft_p95_s,
                1.0,
                " s",
                False,
                why=IN_PROCESS_FILE,
            ),
        ]
    if "openai" in results and "llamacpp" in results:
        found.append(
            Target(
                "engines: openai on llama.cpp's server (log-probs) one stream vs llamacpp in process",
                results["openai"][1].tokens_per_s / results["llamacpp"][1].tokens_per_s,
                0.5,
                "x",
            )
        )
    return found


if __name__ == "__main__":
    import sys

    report(main(sys.argv[1:]))
