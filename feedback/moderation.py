"""Comment moderation: the newest-first comment feed and hiding a comment or a whole conversation.

Hiding never deletes: the row stays with who hid it and when (``hidden_by``/``hidden_at``), and
exports, reports and the live overview leave hidden votes and conversations out. Unhiding restores them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import exists, func, select, true
from sqlalchemy.orm import Session, selectinload

from db import rollups
from db.analytics import tag_elements
from db.models import Conversation, Event, Rating, Turn, Vote, utcnow
from db.visibility import vote_counts


class ModerationRefused(PermissionError):
    """The item doesn't exist or belongs to an event this organizer can't moderate."""


@dataclass(frozen=True)
class CommentFilter:
    """What the comments page shows; ``event_ids`` None means every event (admins)."""

    event_ids: tuple[int, ...] | None = None
    region: str | None = None
    tag: str | None = None  # a reason tag on any rated arm
    winner_arm: str | None = None  # on, off, tie, both_bad, identical
    stars: int | None = None  # a rating with exactly this many stars
    include_hidden: bool = False


@dataclass(frozen=True)
class Comment:
    vote_id: int
    conversation_id: int
    event_code: str
    created_at: dt.datetime
    winner_arm: str
    comment: str
    prompt: str
    stars: dict[str, int] = field(default_factory=dict)  # rated arm -> stars
    tags: dict[str, list[str]] = field(default_factory=dict)  # rated arm -> tags
    hidden_by: str | None = None  # who hid this comment, or its conversation
    conversation_hidden: bool = False

    @property
    def hidden(self) -> bool:
        return self.hidden_by is not None


def comment_feed(session: Session, where: CommentFilter, limit: int = 50, offset: int = 0) -> list[Comment]:
    """Votes with a comment, newest first, filtered in SQL; one page of ``limit`` rows."""
    query = (
        select(Vote, Conversation, Event.code, Turn.prompt)
        .join(Conversation, Conversation.id == Vote.conversation_id)
        .join(Event, Event.id == Vote.event_id)
        .join(Turn, Turn.id == Vote.turn_id)
        .where(Vote.comment.is_not(None))
        .options(selectinload(Vote.ratings))
        .order_by(Vote.created_at.desc(), Vote.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if where.event_ids is not None:
        query = query.where(Vote.event_id.in_(where.event_ids))
    if where.region is not None:
        query = query.where(Event.region == where.region)
    if where.winner_arm is not None:
        query = query.where(Vote.winner_arm == where.winner_arm)
    if where.stars is not None:
        query = query.where(exists().where(Rating.vote_id == Vote.id, Rating.stars == where.stars))
    if where.tag is not None:
        elements, is_list = tag_elements(session, Rating.tags)
        tagged = (
            select(Rating.id)
            .join(elements, true())
            .where(Rating.vote_id == Vote.id, is_list, elements.c.value == where.tag)
        )
        query = query.where(tagged.exists())
    if not where.include_hidden:
        query = query.where(vote_counts())
    comments = []
    for vote, conversation, code, prompt in session.execute(query):
        comments.append(
            Comment(
                vote_id=vote.id,
                conversation_id=conversation.id,
                event_code=code,
                created_at=vote.created_at,
                winner_arm=vote.winner_arm,
                comment=vote.comment,
                prompt=prompt,
                stars={r.arm: r.stars for r in vote.ratings if r.stars is not None},
                tags={r.arm: list(r.tags) for r in vote.ratings if r.tags},
                hidden_by=vote.hidden_by or conversation.hidden_by,
                conversation_hidden=conversation.hidden_at is not None,
            )
        )
    return comments


def used_tags(session: Session, event_ids: tuple[int, ...] | None = None) -> list[str]:
    """Every reason tag used so far (for the tag filter), alphabetically."""
    elements, is_list = tag_elements(session, Rating.tags)
    query = select(elements.c.value).select_from(Rating).join(elements, true()).where(is_list).distinct()
    if event_ids is not None:
        query = query.where(Rating.vote_id.in_(select(Vote.id).where(Vote.event_id.in_(event_ids))))
    return sorted(session.scalars(query))


def _moderated(
    session: Session, model: type[Vote] | type[Conversation], item_id: int, allowed_event_ids: Collection[int] | None
) -> Vote | Conversation:
    item = session.get(model, item_id)
    kind = "comment" if model is Vote else "conversation"
    if item is None or (allowed_event_ids is not None and item.event_id not in allowed_event_ids):
        raise ModerationRefused(f"No {kind} #{item_id} in the events you moderate; refresh the list.")
    return item


def _set_hidden(item: Vote | Conversation, by: str | None) -> None:
    if by is None:
        item.hidden_at, item.hidden_by = None, None
        return
    if not by.strip():
        raise ModerationRefused("Moderation needs the moderator's name; sign in again.")
    if item.hidden_at is None:  # hiding twice keeps the first moderator and time
        item.hidden_at, item.hidden_by = utcnow(), by


def _counted(item: Vote | Conversation) -> rollups.Delta:
    if isinstance(item, Vote):
        return rollups.vote_delta(item, item.conversation)
    return rollups.conversation_delta(item)


def _set_hidden_counted(session: Session, item: Vote | Conversation, by: str | None) -> None:
    """Hide or unhide, and move what the item adds to the overview's rollups out or back in.

    The conversation is locked first (``db.rollups.lock_conversation``): a vote or turn being saved in
    it takes the same lock, so what the item adds is read after that write commits, never half of it."""
    session.flush()
    rollups.lock_conversation(session, item.conversation_id if isinstance(item, Vote) else item.id)
    session.expire_all()  # read the turns, votes and ratings as they are now, under the lock
    before = _counted(item)
    _set_hidden(item, by)
    session.flush()
    rollups.apply(session, _counted(item).minus(before))


def hide_comment(session: Session, vote_id: int, by: str, allowed_event_ids: Collection[int] | None = None) -> Vote:
    """Hide one vote (with its comment and ratings) from reports, exports and the overview."""
    vote = _moderated(session, Vote, vote_id, allowed_event_ids)
    _set_hidden_counted(session, vote, by)
    return vote


def unhide_comment(session: Session, vote_id: int, allowed_event_ids: Collection[int] | None = None) -> Vote:
    vote = _moderated(session, Vote, vote_id, allowed_event_ids)
    _set_hidden_counted(session, vote, None)
    return vote


def hide_conversation(
    session: Session, conversation_id: int, by: str, allowed_event_ids: Collection[int] | None = None
) -> Conversation:
    """Hide a whole conversation: every turn, answer and vote in it leaves reports and exports."""
    conversation = _moderated(session, Conversation, conversation_id, allowed_event_ids)
    _set_hidden_counted(session, conversation, by)
    return conversation


def unhide_conversation(
    session: Session, conversation_id: int, allowed_event_ids: Collection[int] | None = None
) -> Conversation:
    conversation = _moderated(session, Conversation, conversation_id, allowed_event_ids)
    _set_hidden_counted(session, conversation, None)
    return conversation


def hidden_counts(session: Session, event_ids: tuple[int, ...] | None = None) -> tuple[int, int]:
    """How many votes and conversations are hidden (shown on the comments page)."""
    votes = select(Vote.id).where(Vote.hidden_at.is_not(None))
    conversations = select(Conversation.id).where(Conversation.hidden_at.is_not(None))
    if event_ids is not None:
        votes = votes.where(Vote.event_id.in_(event_ids))
        conversations = conversations.where(Conversation.event_id.in_(event_ids))
    return (
        session.scalar(select(func.count()).select_from(votes.subquery())) or 0,
        session.scalar(select(func.count()).select_from(conversations.subquery())) or 0,
    )
