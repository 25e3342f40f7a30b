"""What the attendee page does, without Streamlit: join, consent, prompt checks, blind state, feedback.

The page keeps one ``BlindComparison`` per browser tab and calls these functions; everything that
touches the database goes through ``feedback.capture`` and ``feedback.votes`` with retries for a briefly unavailable one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from db.models import Event, Participant
from db.queries import event_by_code
from db.session import in_transaction
from db.slots import SlotRefused, give_back_slot, take_slot
from db.vocabulary import arm_of, pane_of
from feedback.capture import (
    check_prompt_allowed,
    join_event,
    record_turn,
    save_profile,
    set_ui_language,
    start_conversation,
    validate_prompt,
)
from feedback.errors import FeedbackRejected, HallBusy, RateLimited
from feedback.records import TurnRecord
from feedback.votes import PaneRating, VoteSubmission, event_tags, finalize_votes, save_vote
from playground.runtime import cloud_client, comparison_for, context_window
from playground.settings import Settings
from playground.turn_runner import ShownTurn, TurnRunner

Message = dict[str, str]


@dataclass(frozen=True)
class EventView:
    """The event as the attendee page needs it, detached from any database session."""

    id: int
    code: str
    name: str
    region: str
    city: str
    ui_language: str
    consent_text: str | None
    like_tags: tuple[str, ...]
    dislike_tags: tuple[str, ...]
    ask_profile: bool
    handoff_policy: str | None
    handoff_threshold: float | None
    latency_fair: bool = False

    @property
    def tags(self) -> tuple[str, ...]:
        return self.like_tags + self.dislike_tags


def load_event(url: str, code: str) -> EventView:
    """The event with this code; raises ``UnknownEvent`` (with ``.code``) when there is none."""

    def read(session: Any) -> EventView:
        event: Event = event_by_code(session, code)
        like, dislike = event_tags(event)
        return EventView(
            id=event.id,
            code=event.code,
            name=event.name,
            region=event.region,
            city=event.city,
            ui_language=event.ui_language or "en",
            consent_text=event.consent_text,
            like_tags=tuple(like),
            dislike_tags=tuple(dislike),
            ask_profile=bool(event.ask_profile),
            handoff_policy=event.handoff_policy,
            handoff_threshold=event.handoff_threshold,
            latency_fair=bool(event.latency_fair),
        )

    return in_transaction(url, read)


def handoff_paused(url: str, event_id: int) -> bool:
    """True when the event's cloud budget cannot pay for even an empty cloud request.

    Saying so reveals nothing about the sides: while it holds, both panes show the local answer.
    """
    budget, spent = in_transaction(
        url,
        lambda session: session.execute(
            select(Event.cloud_budget, Event.cloud_spent).where(Event.id == event_id)
        ).one(),
    )
    if budget is None:
        return False
    return budget - (spent or 0) < cloud_client().max_cost([{"role": "user", "content": ""}])


def _participant_key(settings: Settings) -> bytes:
    if settings.participant_secret is not None:
        return settings.participant_secret.get_secret_value().encode()
    return _PROCESS_KEY


_PROCESS_KEY = secrets.token_bytes(32)  # used when no participant_secret is set (one replica)
COOKIE_PREFIX = "handoff_participant_"


def participant_cookie_name(event: EventView) -> str:
    """One cookie per event, so one browser can take part in two events."""
    return f"{COOKIE_PREFIX}{event.id}"


def _signature(settings: Settings, event_id: int, uid: str) -> str:
    message = f"participant:{event_id}:{uid}".encode()
    return hmac.new(_participant_key(settings), message, hashlib.sha256).hexdigest()[:32]


def participant_token(url: str, settings: Settings, event: EventView, participant_id: int) -> str:
    """A token that brings this participant back after a reload: their uid, signed for this event.

    Only the signature depends on the secret; the secret itself never leaves the settings.
    """
    uid = in_transaction(
        url, lambda session: session.scalar(select(Participant.uid).where(Participant.id == participant_id))
    )
    return f"{uid}.{_signature(settings, event.id, uid)}"


def returning_participant(url: str, settings: Settings, event: EventView, token: str | None) -> int | None:
    """The participant a token names, when its signature holds for this event; else None (ask consent)."""
    if not token or token.count(".") != 1:
        return None
    uid, signature = token.split(".")
    if not hmac.compare_digest(signature, _signature(settings, event.id, uid)):
        return None
    return in_transaction(
        url,
        lambda session: session.scalar(
            select(Participant.id).where(Participant.uid == uid, Participant.event_id == event.id)
        ),
    )


def give_consent(url: str, event: EventView, ui_language: str) -> int:
    """Create the pseudonymous participant (only ever after consent); returns its id."""
    return in_transaction(
        url, lambda session: join_event(session, session.get(Event, event.id), ui_language=ui_language).id
    )


def update_profile(url: str, participant_id: int, profile: dict[str, str | None]) -> dict[str, str]:
    return in_transaction(url, lambda session: save_profile(session, participant_id, profile))


def remember_language(url: str, participant_id: int, language: str) -> None:
    in_transaction(url, lambda session: set_ui_language(session, participant_id, language))


@dataclass
class BlindComparison:
    """One tab's comparison: the randomized side, what was shown, and the feedback of the latest round."""

    conversation_id: int | None = None
    handoff_side: str | None = None
    turns: list[ShownTurn] = field(default_factory=list)
    vote_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    saved: bool = False
    pending: VoteSubmission | None = None  # feedback kept on the page while the database is unavailable
    revealed: bool = False
    runner: TurnRunner | None = None

    def pane_of(self, arm: str) -> str:
        assert self.handoff_side is not None
        return pane_of(arm, self.handoff_side)

    def arm_of(self, pane: str) -> str:
        assert self.handoff_side is not None
        return arm_of(pane, self.handoff_side)

    def history(self, arm: str) -> list[Message]:
        """The conversation as this arm's pane showed it: each pane continues its own history."""
        messages: list[Message] = []
        for turn in self.turns:
            messages += [{"role": "user", "content": turn.prompt}, {"role": "assistant", "content": turn.texts[arm]}]
        return messages

    @property
    def identical(self) -> bool:
        """Both panes hold the same text in the latest round: one quality rating replaces the pairwise vote."""
        return bool(self.turns) and self.turns[-1].texts["off"] == self.turns[-1].texts["on"]

    @property
    def latest(self) -> ShownTurn | None:
        return self.turns[-1] if self.turns else None

    def feedback_key(self, name: str) -> str:
        """The widget key of one feedback field (``winner``, ``stars_a``, ``comment``, …) for the latest round.

        Keyed by the round's turn: with one key for every round, the browser kept the previous round's
        choice in its widget (a run that ends in ``st.rerun`` does not reset it), so clicking
        "A is better" again in round 2 switched it off.
        """
        assert self.latest is not None
        return f"{name}_{self.latest.turn_id}"

    def add_turn(self, turn: ShownTurn) -> None:
        """A new round: the previous feedback is final and the next submission gets a new key."""
        self.turns.append(turn)
        self.vote_key, self.saved, self.pending = uuid.uuid4().hex, False, None

    def submission(self, winner: str, comment: str | None, ratings: dict[str, PaneRating]) -> VoteSubmission:
        latest = self.latest
        assert self.conversation_id is not None and latest is not None
        return VoteSubmission(
            self.vote_key,
            self.conversation_id,
            winner,
            comment,
            ratings,
            turn_id=latest.turn_id,
            display=latest.display,
        )


def check_context(settings: Settings, comparison: BlindComparison, prompt: str) -> None:
    """Refuse a prompt, or a conversation with it, that the model can't read and still answer in full.

    Counted in tokens (8,000 emoji are ~24,000 tokens): room = the model's context - ``max_new_tokens``.
    Each arm continues its own history, so the longer one counts.
    """
    window = context_window(settings)
    room = window.context_tokens - settings.max_new_tokens
    asked = {"role": "user", "content": prompt}
    alone = window.count([asked])
    if alone > room:
        raise FeedbackRejected("prompt_too_many_tokens", tokens=alone, max_tokens=room)
    if comparison.turns:
        longest = max(window.count([*comparison.history(arm), asked]) for arm in ("off", "on"))
        if longest > room:
            raise FeedbackRejected("conversation_too_long", tokens=longest, max_tokens=room)


def start_turn(
    url: str,
    settings: Settings,
    event: EventView,
    participant_id: int,
    comparison: BlindComparison,
    prompt: str,
    category: str | None = None,
) -> TurnRunner:
    """Check the prompt against every limit, open the conversation on its first prompt, start the turn.

    Raises ``FeedbackRejected`` (with a message key) for a prompt the person should change or
    send later. The turn holds a slot (``db.slots``) while it runs: a started turn counts against
    the prompt rate even when both panes are stopped, and the event caps how many run at once.
    """
    validate_prompt(prompt, settings.max_prompt_chars)
    check_context(settings, comparison, prompt)
    if comparison.revealed:
        raise FeedbackRejected("revealed")
    if comparison.pending is not None:  # feedback kept through an outage goes in before the round closes
        save_feedback(url, settings, event, comparison.pending)
        comparison.pending, comparison.saved = None, True

    slot = in_transaction(
        url,
        lambda session: take_slot(
            session,
            event.id,
            participant_id,
            per_minute=settings.max_prompts_per_minute,
            max_running=settings.max_running_turns_per_event,
            ttl=dt.timedelta(seconds=settings.turn_slot_ttl_s),
        ),
    )
    if isinstance(slot, SlotRefused):
        if slot.reason == "rate":
            raise RateLimited(slot.limit, slot.wait_s)
        raise HallBusy(slot.running, slot.limit)

    def open_conversation(session: Any) -> tuple[int | None, str | None]:
        check_prompt_allowed(session, comparison.conversation_id, max_turns=settings.max_turns)
        if comparison.conversation_id is not None:
            return comparison.conversation_id, comparison.handoff_side
        conversation = start_conversation(session, session.get(Participant, participant_id), category)
        return conversation.id, conversation.handoff_side

    def release(counted: bool = True) -> None:
        in_transaction(url, lambda session: give_back_slot(session, slot, counted=counted))

    try:
        comparison.conversation_id, comparison.handoff_side = in_transaction(url, open_conversation)
    except BaseException:
        release(counted=False)
        raise
    conversation_id = comparison.conversation_id
    history_off, history_on = comparison.history("off"), comparison.history("on")

    def store(record: TurnRecord) -> int:
        return in_transaction(url, lambda session: record_turn(session, conversation_id, record).id)

    comparison.runner = TurnRunner(
        prompt=prompt,
        category=category,
        events=lambda: comparison_for(event.handoff_policy, event.handoff_threshold, settings, event_id=event.id).run(
            prompt, history_off, history_on, category, participant_id=participant_id
        ),
        store=store,
        on_end=release,
        fair=event.latency_fair,
    ).start()
    return comparison.runner


def save_feedback(url: str, settings: Settings, event: EventView, submission: VoteSubmission) -> int:
    """Store the latest round's feedback (retrying); raises ``FeedbackRejected`` or ``DatabaseUnavailable``."""
    return save_vote(url, submission, max_comment_chars=settings.max_comment_chars, allowed_tags=event.tags)


def reveal(url: str, comparison: BlindComparison) -> None:
    """Show the arms: from now on this comparison's feedback is final and it takes no more prompts."""
    if comparison.conversation_id is not None:
        conversation_id = comparison.conversation_id
        in_transaction(url, lambda session: finalize_votes(session, conversation_id))
    comparison.revealed = True


def leave(url: str, comparison: BlindComparison) -> None:
    """Starting over: the old comparison's feedback becomes final (it can no longer be edited)."""
    if comparison.conversation_id is not None and comparison.turns:
        conversation_id = comparison.conversation_id
        in_transaction(url, lambda session: finalize_votes(session, conversation_id))
