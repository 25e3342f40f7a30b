"""Loop rate of the bundled model on the 80 MT-Bench first turns: the decoding defaults before issue
14 against the settings' defaults now, in one run, on one engine.

    python -m bench.repetition                        # transformers engine (the default), every first turn
    python -m bench.repetition --engine llamacpp      # another local engine
    python -m bench.repetition --prompts 16           # a quick look

Every first turn is answered twice with the same per-prompt seed: once with the old decoding
(temperature 0.7, top-p 0.9, 256 new tokens, no repetition penalty, no n-gram ban) and once with
``Decoding.from_settings(Settings())``. All prompts of one configuration are submitted together,
so the engine batches them as it batches sessions. Answers run to their end: the loop detector only
watches here, so both configurations are judged on whole answers by the same rule.

An answer *loops* when ``feedback.repetition``'s rule (the settings' ``loop_rule``, the one that
stops drafts live) fires on it. Also counted, the issue's own symptom: a line (10+ characters)
written three times or more. The detector's word index at firing says how many tokens a looping
draft would have spent after it was stopped.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass

from bench.common import Target, machine, report
from feedback.demo_data import load_prompts
from feedback.repetition import LoopDetector, LoopRule
from playground.engine.engines import LocalModelEngine, load_engine
from playground.engine.sampling import Decoding
from playground.settings import Settings

SYSTEM_PROMPT = Settings().system_prompt
OLD = Decoding(max_new_tokens=256, temperature=0.7, top_p=0.9, repetition_penalty=1.0, no_repeat_ngram_size=0)
BATCH = 40  # rows decoded together: half the prompts, well inside max_batch_tokens
REPEATED_LINE = 3  # the same line this many times is the symptom attendees saw (fifteen times, in the issue)


@dataclass
class Answer:
    text: str
    tokens: int
    finish_reason: str
    looped: bool
    tokens_after_loop: int  # tokens written after the detector would have stopped the draft


def first_turns(count: int | None = None) -> list[str]:
    """The MT-Bench first turns, in the file's order."""
    turns = [question["turns"][0] for question in load_prompts()]
    return turns[:count] if count else turns


def repeated_line(text: str) -> bool:
    """Some line of 10+ characters appears ``REPEATED_LINE`` times or more."""
    lines = Counter(line.strip() for line in text.splitlines() if len(line.strip()) >= 10)
    return any(n >= REPEATED_LINE for n in lines.values())


def answer_all(engine: LocalModelEngine, prompts: list[str], decoding: Decoding, rule: LoopRule) -> list[Answer]:
    """Every prompt at once with this decoding (seed = the prompt's index); the detector watches each stream."""
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
    fired_at: list[int | None] = [None] * len(generations)

    def watch(i: int) -> None:
        detector = LoopDetector(rule)
        for delta in generations[i]:
            if fired_at[i] is None and detector.feed(delta):
                fired_at[i] = len(generations[i].logprobs)

    readers = [threading.Thread(target=watch, args=(i,)) for i in range(len(generations))]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    answers = []
    for generation, fired in zip(generations, fired_at, strict=True):
        result = generation.wait()
        answers.append(
            Answer(
                text=result.text,
                tokens=result.tokens_out,
                finish_reason=result.finish_reason,
                looped=fired is not None,
                tokens_after_loop=result.tokens_out - fired if fired is not None else 0,
            )
        )
    return answers


def summary(name: str, answers: list[Answer], seconds: float) -> dict[str, float]:
    n = len(answers)
    figures = {
        "loop_rate": sum(a.looped for a in answers) / n,
        "repeated_line_rate": sum(repeated_line(a.text) for a in answers) / n,
        "length_limit_rate": sum(a.finish_reason == "length" for a in answers) / n,
        "mean_tokens": statistics.fmean(a.tokens for a in answers),
        "tokens_after_loop": sum(a.tokens_after_loop for a in answers),
        "seconds": seconds,
    }
    print(
        f"{name:<5} loops {figures['loop_rate']:6.1%}  repeated line {figures['repeated_line_rate']:6.1%}  "
        f"hit the length limit {figures['length_limit_rate']:6.1%}  mean {figures['mean_tokens']:5.1f} tokens  "
        f"tokens after a loop began {figures['tokens_after_loop']:5.0f}  ({seconds:.0f} s)",
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
        answers = answer_all(engine, prompts, decoding, rule)
        figures[name] = summary(name, answers, time.perf_counter() - started)
        if args.show:
            for answer in answers:
                if answer.looped or repeated_line(answer.text):
                    print(f"--- {name}, looped={answer.looped}:\n{answer.text}\n", flush=True)
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
