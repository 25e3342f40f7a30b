"""Capture of participants, conversations and turns, with the limits that keep feedback research-grade.

Participants exist only after consent and carry a random pseudonym; a prompt past the turn limit or
the participant's rate limit is refused (counted in the database, so every tab shares the limits).
Votes have their own module, ``feedback.votes``; transactions that ride out a briefly unavailable
database are ``db.session.in_transaction``.
"""

from __future__ import annotations

import secrets

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db import rollups
from db.models import Answer, Conversation, Event, HandoffDecision, Participant, Turn, utcnow
from db.vocabulary import PANES
from feedback.errors import FeedbackRejected, TurnLimitReached, check_text
from feedback.records import TurnRecord
from feedback.style import reveals_origin, style_features
from feedback.votes import finalize_votes

# The optional self-description an organizer may switch on; every field may be left out.
PROFILE_CHOICES: dict[str, tuple[str, ...]] = {
    "role": ("developer", "researcher", "data", "student", "product", "other"),
    "experience": ("none", "tried", "regular", "builder"),
    "language": ("en", "ja", "fr", "zh", "ko", "es", "de", "other"),
}


def validate_prompt(prompt: str, max_chars: int) -> str:
    if not prompt or not prompt.strip():
        raise FeedbackRejected("empty_prompt")
    if len(prompt) > max_chars:
        raise FeedbackRejected("prompt_too_long", length=len(prompt), max_chars=max_chars)
    if "\x00" in prompt:  # PostgreSQL can't store it, and the person can remove it
        raise FeedbackRejected("nul_character")
    return check_text(prompt)


def check_prompt_allowed(session: Session, conversation_id: int | None, *, max_turns: int) -> None:
    """Refuse a prompt past the conversation's turn limit (the prompt rate is ``db.slots.take_slot``)."""
    if conversation_id is not None:
        turns = session.scalar(select(func.count()).select_from(Turn).where(Turn.conversation_id == conversation_id))
        if turns >= max_turns:
            raise TurnLimitReached(max_turns)


def validate_profile(profile: dict[str, str | None]) -> dict[str, str]:
    """Keep only the fields given; unknown fields or values are refused (nothing free-text is asked)."""
    clean: dict[str, str] = {}
    for name, value in profile.items():
        if value in (None, ""):
            continue
        if name not in PROFILE_CHOICES or value not in PROFILE_CHOICES[name]:
            raise FeedbackRejected("bad_profile", value=value, field=name)
        clean[name] = value
    return clean


def join_event(
    session: Session, event: Event, *, ui_language: str | None = None, profile: dict | None = None
) -> Participant:
    """Create a pseudonymous participant; call only once consent was given."""
    participant = Participant(
        event_id=event.id,
        pseudonym=secrets.token_urlsafe(16),
        consented_at=utcnow(),
        ui_language=ui_language,
        profile=validate_profile(profile) if profile else None,
    )
    session.add(participant)
    session.flush()
    rollups.apply(session, rollups.count_delta(event.id, "participants"))
    return participant


def save_profile(session: Session, participant_id: int, profile: dict[str, str | None]) -> dict[str, str]:
    """Store the optional self-description; an empty one stores nothing."""
    clean = validate_profile(profile)
    participant = session.get(Participant, participant_id)
    assert participant is not None
    participant.profile = clean or None
    return clean


def set_ui_language(session: Session, participant_id: int, language: str) -> None:
    """Remember the interface language the participant switched to (for analysis by language)."""
    session.execute(update(Participant).where(Participant.id == participant_id).values(ui_language=language))


def start_conversation(session: Session, participant: Participant, category: str | None = None) -> Conversation:
    """A new blind comparison with the handoff arm on a random side."""
    conversation = Conversation(
        event_id=participant.event_id,
        participant_id=participant.id,
        handoff_side=secrets.choice(PANES),
        category=category,
    )
    session.add(conversation)
    session.flush()
    rollups.apply(session, rollups.count_delta(conversation.event_id, "conversations"))
    return conversation


def record_turn(session: Session, conversation_id: int, record: TurnRecord) -> Turn:
    """Store a prompt with its answers and handoff decision; earlier votes become final.

    Idempotent by ``record.uid``: storing the same record again returns the turn stored the first time."""
    stored = session.scalar(select(Turn).where(Turn.uid == record.uid))
    if stored is not None:
        return stored
    index = session.scalar(
        select(Turn.index).where(Turn.conversation_id == conversation_id).order_by(Turn.index.desc()).limit(1)
    )
    finalize_votes(session, conversation_id)
    turn = Turn(
        uid=record.uid,
        conversation_id=conversation_id,
        index=0 if index is None else index + 1,
        prompt=record.prompt,
        language=record.language,
        category=record.category,
    )
    # A DecisionRecord names exactly the row's columns, as an AnswerRecord does: the one copy of each.
    turn.decision = HandoffDecision(**vars(record.decision))
    turn.answers = [
        Answer(
            **vars(answer),
            style=style_features(answer.text, answer.tokens_out),
            reveals_origin=reveals_origin(answer.text),
        )
        for answer in record.answers
    ]
    session.add(turn)
    session.flush()
    # as a vote does: ordered against a moderator's hide, and the conversation as it is under the lock
    conversation = rollups.lock_conversation(session, conversation_id)
    if conversation is not None:
        rollups.apply(session, rollups.turn_delta(conversation, turn))
    return turn
