"""Loop rate of the bundled model on the 80 MT-Bench first turns: the decoding defaults before issue
14 against the settings' defaults now, in one run, on one engine.

    python -m bench.repetition                        # transformers engine (the default), every first turn
    python -m bench.repetition --engine llamacpp      # another local engine
    python -m bench.repetition --prompts 16           # a quick look

Every first turn is answered twice with the same per-prompt seed: once with the old decoding
(temperature 0.7, top-p 0.9, 256 new tokens, no repetition penalty, no n-gram ban) and once with
``Decoding.from_settings(Settings())``. All prompts of one configuration are submitted together,
so the engine batches them as it batches sessions. Answers run to their end (nothing stops them
here), so both configurations are judged on whole answers by the same rule.

An answer *loops* when ``feedback.repetition``'s rule (the settings' ``loop_rule``, the one that
stops drafts live) fires on it. Also counted, the issue's own symptom: a line (10+ characters)
written three times or more; and the spread of the repetition signal (how close ordinary answers
come to the rule).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

from bench.common import Target, machine, report
from feedback.prompts import load_prompts
from feedback.repetition import LoopRule, repetition
from playground.engine.contract import LocalModelEngine, LocalResult
from playground.engine.engines import load_engine
from playground.engine.sampling import Decoding
from playground.settings import Settings

SYSTEM_PROMPT = Settings().system_prompt
OLD = Decoding(max_new_tokens=256, temperature=0.7, top_p=0.9, repetition_penalty=1.0, no_repeat_ngram_size=0)
BATCH = 40  # rows decoded together: half the prompts, well inside max_batch_tokens
REPEATED_LINE = 3  # the same line this many times is the symptom attendees saw (fifteen times, in the issue)


def answer_all(engine: LocalModelEngine, prompts: list[str], decoding: Decoding) -> list[LocalResult]:
    """Every prompt at once with this decoding (seed = the prompt's index), each read to its end."""
    generations = [
        engine.generate(
            [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
            max_new_tokens=decoding.max_new_tokens,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            repetition_penalty=decoding.repetition_penalty,
            no_repeat_ngram_size=decoding.no_repeat_ngram_size,
            seed=index,
        )
        for index, prompt in enumerate(prompts)
    ]
    return [generation.wait() for generation in generations]


def first_turns(count: int | None = None) -> list[str]:
    """The MT-Bench first turns, in the file's order."""
    turns = [question["turns"][0] for question in load_prompts()]
    return turns[:count] if count else turns


def repeated_line(text: str) -> bool:
    """Some line of 10+ characters appears ``REPEATED_LINE`` times or more."""
    lines = Counter(line.strip() for line in text.splitlines() if len(line.strip()) >= 10)
    return any(n >= REPEATED_LINE for n in lines.values())


def summary(name: str, results: list[LocalResult], rule: LoopRule, seconds: float) -> dict[str, float]:
    """Loop rate and the rest for one configuration; the repetition signal's spread shows the rule's margin."""
    seen = [repetition(r.text, rule) for r in results]
    n = len(results)
    shares = sorted(s.repetition for s in seen)
    figures = {
        "loop_rate": sum(s.looped for s in seen) / n,
        "repeated_line_rate": sum(repeated_line(r.text) for r in results) / n,
        "length_limit_rate": sum(r.finish_reason == "length" for r in results) / n,
        "mean_tokens": statistics.fmean(r.tokens_out for r in results),
        "tokens_out": sum(r.tokens_out for r in results),
        "seconds": seconds,
    }
    print(
        f"{name:<5} loops {figures['loop_rate']:6.1%}  repeated line {figures['repeated_line_rate']:6.1%}  "
        f"hit the length limit {figures['length_limit_rate']:6.1%}  mean {figures['mean_tokens']:5.1f} tokens  "
        f"({figures['tokens_out'] / seconds:.1f} tokens/s, {seconds:.0f} s); repetition signal median "
        f"{statistics.median(shares):.2f}, p90 {shares[int(0.9 * (n - 1))]:.2f}, "
        f"answers at 0.5-{rule.share:g}: {sum(0.5 <= x < rule.share for x in shares)}",
        flush=True,
    )
    return figures


def main(argv: list[str] | None = None) -> list[Target]:
    parser = argparse.ArgumentParser(prog="python -m bench.repetition", description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="transformers", choices=("transformers", "llamacpp"))
    parser.add_argument("--prompts", type=int, default=None, help="only the first N first turns (default: all 80)")
    parser.add_argument("--show", action="store_true", help="print every looping answer")
    args = parser.parse_args(argv if argv is not None else [])
    settings = Settings(local_engine=args.engine, max_batch_size=BATCH)
    new = Decoding.from_settings(settings)
    rule = settings.loop_rule
    prompts = first_turns(args.prompts)
    print(f"machine: {machine()}", flush=True)
    print(f"{len(prompts)} MT-Bench first turns, engine {args.engine}; loop rule {rule}", flush=True)
    print(f"old: {OLD}\nnew: {new}", flush=True)
    engine = load_engine(settings)
    engine.warm_up()
    figures = {}
    for name, decoding in (("old", OLD), ("new", new)):
        started = time.perf_counter()
        results = answer_all(engine, prompts, decoding)
        figures[name] = summary(name, results, rule, time.perf_counter() - started)
        if args.show:
            for result in results:
                if repetition(result.text, rule).looped or repeated_line(result.text):
                    print(f"--- {name}, {repetition(result.text, rule)}:\n{result.text}\n", flush=True)
    engine.close()
    old, now = figures["old"], figures["new"]
    return [
        Target("repetition: loop rate, new decoding defaults", now["loop_rate"], 0.05, "", False),
        Target(
            "repetition: loop rate new / old",
            now["loop_rate"] / old["loop_rate"] if old["loop_rate"] else 0.0,
            0.5,
            "x",
            False,
        ),
        Target("repetition: a line written 3+ times, new defaults", now["repeated_line_rate"], 0.025, "", False),
        Target("repetition: answers cut by the length limit, new defaults", now["length_limit_rate"], 0.25, "", False),
    ]


if __name__ == "__main__":
    import sys

    report(main(sys.argv[1:]))
