"""What every handoff policy shares: its input, its contract and the error it raises when it can't run.

Kept apart from the policies themselves so ``policies``, ``router`` and ``self_handoff`` all import it
and none of them imports another to get it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

Stage = Literal["pre", "post"]


@dataclass
class PolicyInput:
    """What a policy may look at: the conversation and, for ``post`` policies, the local draft."""

    messages: list[dict[str, str]]
    draft: str = ""
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)


class Policy(Protocol):
    name: ClassVar[str]
    version: str
    stage: ClassVar[Stage]
    early: ClassVar[bool]

    def score(self, data: PolicyInput, signals: dict[str, Any]) -> tuple[float, str | None]:
        """Return (score, human-readable reason)."""
        ...


class PolicyUnavailable(RuntimeError):
    """The chosen policy cannot run with this model or data; the message says what would fix it."""
