"""Panes, arms and verdicts: the names every layer uses, and the one mapping between panes and arms.

An attendee sees two panes, ``a`` (left) and ``b`` (right). Behind them are two arms: ``off`` (the
local model alone) and ``on`` (the local model with its handoff policy); each conversation puts the
``on`` arm on a random side, stored as ``Conversation.handoff_side``. A vote is stored both ways:
``winner`` as the attendee saw it (panes) and ``winner_arm`` as research reads it (arms). Every
translation between the two goes through the functions here, so no layer writes the mapping again.
"""

from __future__ import annotations

PANES = ("a", "b")  # left, right
SHOWN_ARMS = ("off", "on")  # the arms behind the two panes
ARMS = (*SHOWN_ARMS, "shadow")  # every answer row; shadow: a cloud answer fetched but never shown
BOTH = "both"  # the one rating given to two identical answers (stored as a rating's pane and arm)
RATED_ARMS = (*SHOWN_ARMS, BOTH)  # what a rating row is about
NON_PANE_VERDICTS = ("tie", "both_bad", "identical")  # verdicts that name no pane, the same in both terms
WINNERS = (*PANES, *NON_PANE_VERDICTS)  # ``Vote.winner``: pane terms, what the attendee chose
PAIRWISE_WINNERS = WINNERS[:-1]  # what the page offers when the answers differ (identical is detected)
WINNER_ARMS = ("on", "off", *NON_PANE_VERDICTS)  # ``Vote.winner_arm``: arm terms, what research reads
DECIDED = ("on", "off")  # verdicts that prefer an arm: the win rate's denominator


def other_pane(pane: str) -> str:
    return PANES[1] if pane == PANES[0] else PANES[0]


def arm_of(pane: str, handoff_side: str) -> str:
    """The arm behind ``pane`` when the handoff arm is on ``handoff_side``."""
    return "on" if pane == handoff_side else "off"


def pane_of(arm: str, handoff_side: str) -> str:
    """The pane that showed ``arm`` (``off`` or ``on``)."""
    return handoff_side if arm == "on" else other_pane(handoff_side)


def winner_arm(winner: str, handoff_side: str) -> str:
    """A verdict in pane terms (``a``, ``b``, tie, …) in arm terms (``on``, ``off``, tie, …)."""
    return arm_of(winner, handoff_side) if winner in PANES else winner


def winner_pane(arm: str, handoff_side: str) -> str:
    """A verdict in arm terms back in pane terms: the inverse of ``winner_arm``."""
    return pane_of(arm, handoff_side) if arm in DECIDED else arm


def rating_arm(pane: str, handoff_side: str) -> str:
    """What a rating given on ``pane`` (or on ``both`` identical answers) is stored as."""
    return BOTH if pane == BOTH else arm_of(pane, handoff_side)
