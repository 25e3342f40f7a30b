"""A draft that starts repeating itself is stopped: a wrapper around any answer stream.

``LoopGuard`` reads the stream's text deltas through ``feedback.repetition.LoopDetector``; once the
rule fires it calls the stream's own ``stop()``, and the answer's ``finish_reason`` reads
``"repetition"`` instead of ``"stopped"``. It changes nothing else, so it plugs in wherever an
answer stream is started (the comparison wraps every local draft) and works the same on every engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from feedback.repetition import LoopDetector, LoopRule

REPETITION = "repetition"  # the finish reason of a draft stopped because it looped


class LoopGuard:
    """The wrapped stream, stopped once its text loops. Iterate it as the stream itself."""

    def __init__(self, stream: Any, rule: LoopRule | None = None) -> None:
        self._stream = stream
        self.detector = LoopDetector(rule)
        self.looped = False
        self._marked: Any = None

    def __iter__(self) -> Iterator[str]:
        for delta in self._stream:
            if not self.looped and self.detector.feed(delta):
                self.looped = True
                self._stream.stop()
            yield delta

    def __getattr__(self, name: str) -> Any:  # request, logprobs, entropies, stopped, finished…
        return getattr(self._stream, name)

    def stop(self) -> None:
        self._stream.stop()

    @property
    def result(self) -> Any:
        result = self._stream.result
        return None if result is None else self._mark(result)

    def wait(self, timeout: float | None = None) -> Any:
        return self._mark(self._stream.wait(timeout))

    def _mark(self, result: Any) -> Any:
        """The stream's result, its finish reason ``repetition`` when the guard stopped it."""
        if not self.looped or result.finish_reason != "stopped":
            return result  # not looping, or it ended on its own before the stop took effect
        if self._marked is None:
            self._marked = dataclasses.replace(result, finish_reason=REPETITION)
        return self._marked
