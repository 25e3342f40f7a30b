"""Refusals a person can fix (an empty prompt, a turn past the limit, a vote already final).

Each carries a message key (``errors.<name>`` in the interface catalogs) and its parameters; the
page translates them into the attendee's language, so this layer never needs the catalogs.
"""

from __future__ import annotations

from typing import Any


class FeedbackRejected(ValueError):
    """Input a person can fix; ``key`` and ``params`` name the message in every interface language."""

    def __init__(self, key: str, **params: Any) -> None:
        self.key, self.params = f"errors.{key}", params
        super().__init__(" ".join([self.key, *(f"{name}={value!r}" for name, value in params.items())]))


def check_text(text: str) -> str:
    """Refuse text that is not valid Unicode: unpaired surrogates are what undecodable bytes (invalid
    UTF-8) turn into, and no database or encoder can store them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FeedbackRejected("invalid_text") from None
    return text


class VoteIsFinal(FeedbackRejected):
    def __init__(self) -> None:
        super().__init__("vote_final")


class TurnLimitReached(FeedbackRejected):
    def __init__(self, max_turns: int) -> None:
        super().__init__("turn_limit", max_turns=max_turns)


class HallBusy(FeedbackRejected):
    """The event already has its cap of turns being answered; the person tries again shortly."""

    def __init__(self, running: int, limit: int) -> None:
        super().__init__("hall_busy", running=running, limit=limit)


class RateLimited(FeedbackRejected):
    def __init__(self, limit: int, wait_s: int) -> None:
        super().__init__("rate_limited", limit=limit, wait=wait_s)
        self.wait_s = wait_s
