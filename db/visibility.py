"""What counts: the one rule every number, export, report, replay and the router read through.

A conversation counts when its participant gave consent and moderation has not hidden it; a vote
counts when moderation has not hidden it and its conversation counts. Hiding never deletes (see
``feedback.moderation``), so this rule is what carries a moderation decision to every number at once.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, and_, select

from db.models import Conversation, Participant, Vote


def conversation_counts() -> ColumnElement[bool]:
    """Condition on ``Conversation`` (which the query must read): consented participant, not hidden."""
    consented = select(Participant.id).where(Participant.consented_at.is_not(None))
    return and_(Conversation.hidden_at.is_(None), Conversation.participant_id.in_(consented))


def vote_not_hidden() -> ColumnElement[bool]:
    """The vote's own part of the rule, for votes whose conversation comes from ``counted_conversations``."""
    return Vote.hidden_at.is_(None)


def vote_counts() -> ColumnElement[bool]:
    """Condition on ``Vote`` and its ``Conversation`` (the query joins both): the whole rule for a vote."""
    return and_(vote_not_hidden(), conversation_counts())


def counted_conversations() -> Select[tuple[int]]:
    """Ids of the conversations that count; add filters with ``.where`` / ``.join``."""
    return select(Conversation.id).where(conversation_counts())


def counted_votes() -> Select[tuple[int]]:
    """Ids of the votes that count; add filters with ``.where`` / ``.join``."""
    return select(Vote.id).join(Conversation, Conversation.id == Vote.conversation_id).where(vote_counts())
