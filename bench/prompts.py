"""Benchmark prompts: first-turn MT-Bench questions, two per category, from the shared data set.

The same file feeds the demo data (``feedback.prompts.load_prompts``); MT-Bench gives realistic
prompt and answer lengths for a chat model.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

from feedback.prompts import load_prompts

SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."
PER_CATEGORY = 2
_conversations = itertools.count(1)


@lru_cache(maxsize=1)
def questions() -> tuple[str, ...]:
    """Two first-turn questions per category, categories interleaved, in the file's order."""
    by_category: dict[str, list[str]] = {}
    for question in load_prompts():
        picked = by_category.setdefault(question["category"], [])
        if len(picked) < PER_CATEGORY:
            picked.append(question["turns"][0])
    return tuple(q for rank in range(PER_CATEGORY) for picked in by_category.values() for q in picked[rank : rank + 1])


def chats(count: int | None = None) -> list[list[dict[str, str]]]:
    """``count`` chats (system prompt + one question), cycling through the questions.

    Every chat of the process is a new conversation: its system prompt ends with its own number. A served
    engine (llama-server) keeps each slot's last prompt and skips the part a new prompt shares with it, so
    the same 16 questions asked again would cost it no prompt processing, where a new attendee's question
    does, and where the in-process engines and llama.cpp's bare loop, which keep nothing, pay in full. The
    shared system prompt before the number may be reused, as every attendee's is.
    """
    pool = questions()
    return [
        [
            {"role": "system", "content": f"{SYSTEM_PROMPT} Conversation {next(_conversations)}."},
            {"role": "user", "content": pool[i % len(pool)]},
        ]
        for i in range(len(pool) if count is None else count)
    ]
