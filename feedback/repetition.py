"""Is a text repeating itself? N-gram repetition over its words, fed as it streams.

A small model that loops writes the same line again and again; each of its word n-grams then
repeats one it already wrote. ``LoopDetector`` keeps the last ``window`` n-grams of the text and
the share of them seen before; once that share reaches ``share`` the text is looping. The highest
share seen is the ``repetition`` signal the handoff policies read: near 0 for ordinary prose, 1 for
a verbatim loop.

Words, not model tokens, so the same rule reads every engine and the cloud alike: runs of letters
or digits, runs of punctuation, and each CJK character on its own (Japanese has no spaces).
Case is ignored. Pure and cheap: a set of n-grams and a window of booleans.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+|[^\w\s]+|_+")


@dataclass(frozen=True)
class LoopRule:
    """When a text counts as looping: at least ``share`` of its last ``window`` word ``ngram``s repeat."""

    ngram: int = 4
    window: int = 32
    share: float = 0.75

    def __post_init__(self) -> None:
        if self.ngram < 1 or self.window < 1 or not 0.0 < self.share <= 1.0:
            raise ValueError("a loop rule needs ngram >= 1, window >= 1 and 0 < share <= 1")


@dataclass(frozen=True)
class RepetitionSignals:
    """What the detector saw in a whole text."""

    looped: bool  # the rule fired
    repetition: float  # highest share of repeated n-grams over any full window (0 when none is full)
    repeated_share: float  # repeated n-grams over all n-grams of the text
    loop_at_word: int | None  # the word at which the rule first fired

    def as_signals(self) -> dict[str, float | bool | int | None]:
        return {
            "looped": self.looped,
            "repetition": self.repetition,
            "repeated_ngram_share": self.repeated_share,
            "loop_at_word": self.loop_at_word,
        }


class LoopDetector:
    """Feed text deltas as they arrive; ``looping`` turns True once the rule fires (and stays)."""

    def __init__(self, rule: LoopRule | None = None) -> None:
        self.rule = rule or LoopRule()
        self.words: list[str] = []
        self._pending = ""  # a word that the next delta may continue
        self._seen: set[tuple[str, ...]] = set()
        self._recent: deque[bool] = deque(maxlen=self.rule.window)
        self._repeated_in_window = 0
        self._repeated = 0
        self._ngrams = 0
        self.max_share = 0.0
        self.loop_at_word: int | None = None

    @property
    def looping(self) -> bool:
        return self.loop_at_word is not None

    def feed(self, delta: str) -> bool:
        """Read more of the text; True once it is looping."""
        text = self._pending + delta
        matches = list(WORD.finditer(text))
        self._pending = ""
        if matches and matches[-1].end() == len(text):  # the last word may go on in the next delta
            self._pending = text[matches[-1].start() :]
            matches.pop()
        for match in matches:
            self._add(match.group().lower())
        return self.looping

    def finish(self) -> RepetitionSignals:
        """The text has ended: read its last word and return what was seen."""
        if self._pending:
            self._add(self._pending.lower())
            self._pending = ""
        return RepetitionSignals(
            looped=self.looping,
            repetition=self.max_share,
            repeated_share=self._repeated / self._ngrams if self._ngrams else 0.0,
            loop_at_word=self.loop_at_word,
        )

    def _add(self, word: str) -> None:
        self.words.append(word)
        n = self.rule.ngram
        if len(self.words) < n:
            return
        gram = tuple(self.words[-n:])
        repeated = gram in self._seen
        self._seen.add(gram)
        self._ngrams += 1
        self._repeated += repeated
        if len(self._recent) == self._recent.maxlen:
            self._repeated_in_window -= self._recent[0]
        self._recent.append(repeated)
        self._repeated_in_window += repeated
        if len(self._recent) == self._recent.maxlen:
            share = self._repeated_in_window / len(self._recent)
            self.max_share = max(self.max_share, share)
            if self.loop_at_word is None and share >= self.rule.share:
                self.loop_at_word = len(self.words)


def repetition(text: str, rule: LoopRule | None = None) -> RepetitionSignals:
    """The detector run over a whole text at once (the same result as feeding it in any pieces)."""
    detector = LoopDetector(rule)
    detector.feed(text)
    return detector.finish()
