"""One turn of a blind comparison, run in a background thread so the page only draws.

The page waits on ``next_view()``, which wakes it only when a pane's text or the turn's state changed,
to stream both panes at once; a rerun (any click, including a stop button) does not interrupt the turn. Stopping a pane freezes its answer at what was shown and
stores it as ``stopped``; stopping both abandons the turn and stores nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from db.session import DatabaseUnavailable
from db.vocabulary import SHOWN_ARMS
from feedback.records import TurnRecord
from playground.comparison import Delta, Finished, Note, Status, TurnEvent

log = logging.getLogger(__name__)
RunState = Literal["running", "finished", "cancelled", "not_saved", "failed"]


@dataclass
class ShownTurn:
    """A finished turn as the participant saw it, plus what the reveal needs."""

    turn_id: int
    prompt: str
    texts: dict[str, str]  # by arm
    notes: dict[str, list[Note]]  # status notes by arm, shown (translated) at the reveal
    stopped: list[str]
    handed_off: bool
    blocked_by: str | None
    reason: str | None
    latency_ms: dict[str, float | None]
    category: str | None = None
    display: str = "live"  # or "fair": both panes were released together (stored with the vote)
    policy: str | None = None  # the live policy's name: the reveal explains its decision in words
    energy_wh: dict[str, float | None] = field(default_factory=dict)  # by arm, as stored (feedback.energy)
    cloud_cost: dict[str, Decimal | None] = field(default_factory=dict)  # by arm; None for a local answer


@dataclass
class RunView:
    """What the page draws while (and after) a turn runs."""

    state: RunState
    texts: dict[str, str]
    stopped: list[str]
    turn: ShownTurn | None = None
    error: str | None = None


@dataclass
class TurnRunner:
    """Consume ``Comparison.run`` events off the request path; ``store`` saves the record, returns the turn id."""

    prompt: str
    events: Callable[[], Iterator[TurnEvent]]
    store: Callable[[TurnRecord], int]
    category: str | None = None
    on_end: Callable[[], None] | None = None  # called once the turn is over, whatever the outcome
    fair: bool = False  # latency-fair display: see ``_released``
    _texts: dict[str, str] = field(default_factory=lambda: dict.fromkeys(SHOWN_ARMS, ""))
    _notes: dict[str, list[Note]] = field(default_factory=lambda: {arm: [] for arm in SHOWN_ARMS})
    _stopped: set[str] = field(default_factory=set)
    _state: RunState = "running"
    _turn: ShownTurn | None = None
    _error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: threading.Condition = field(init=False)
    _version: int = 0  # bumped, under the lock, by every change the page could draw

    def __post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    def _touch(self) -> None:
        """Call with the lock held: something the page draws changed."""
        self._version += 1
        self._changed.notify_all()

    def start(self) -> TurnRunner:
        threading.Thread(target=self._run, name="attendee-turn", daemon=True).start()
        return self

    def stop(self, arm: str) -> None:
        """Freeze this arm's answer where it is; when both are stopped the turn is abandoned."""
        with self._lock:
            if self._state == "running":
                self._stopped.add(arm)
                if self._stopped >= set(SHOWN_ARMS):
                    self._state = "cancelled"
                self._touch()

    def snapshot(self) -> RunView:
        with self._lock:
            return self._view()

    def next_view(self, seen: int, timeout: float) -> tuple[int, RunView]:
        """(version, view) once the version differs from ``seen`` (at once if it already does), or after
        ``timeout`` seconds with nothing new: the page sleeps while nothing streams instead of polling."""
        with self._lock:
            self._changed.wait_for(lambda: self._version != seen, timeout)
            return self._version, self._view()

    def _view(self) -> RunView:
        return RunView(self._state, self._released(), sorted(self._stopped), self._turn, self._error)

    def _released(self) -> dict[str, str]:
        """What the panes show. Latency-fair: while the turn runs, each pane shows no more characters than
        the slower pane has, so both start together and the faster one's rest appears when both are done."""
        texts = dict(self._texts)
        if self.fair and self._state == "running":
            shown = min(len(text) for text in texts.values())
            texts = {arm: text[:shown] for arm, text in texts.items()}
        return texts

    def _run(self) -> None:
        try:
            self._answer()
        finally:
            if self.on_end is not None:
                try:
                    self.on_end()
                except DatabaseUnavailable:
                    pass  # the slot lapses at its expiry time instead

    def _answer(self) -> None:
        try:
            finished = self._consume()
            if finished is None:
                return
            record = self._as_shown(finished)
            turn_id = self.store(record)
            with self._lock:
                self._turn = self._shown(turn_id, record)
                self._state = "finished"
                self._touch()
        except DatabaseUnavailable as error:
            self._end("not_saved", str(error))
        except Exception as error:  # noqa: BLE001 - the thread must not die silently
            # the details go to the server log; the page says only that it failed (no SQL, paths or values)
            log.exception("turn failed")
            self._end("failed", type(error).__name__)

    def _end(self, state: RunState, error: str) -> None:
        with self._lock:
            if self._state != "cancelled":
                self._state, self._error = state, error
                self._touch()

    def _consume(self) -> Finished | None:
        events = self.events()
        try:
            for event in events:
                with self._lock:
                    if self._state == "cancelled":
                        return None
                    if isinstance(event, Delta) and event.arm not in self._stopped:
                        self._texts[event.arm] += event.text
                        self._touch()
                    elif isinstance(event, Status):
                        self._notes[event.arm].append(event.note)
                    elif isinstance(event, Finished):
                        return event
            return None
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # abandoning the generator lets the comparison clean up its generations

    def _as_shown(self, finished: Finished) -> TurnRecord:
        """The record with each stopped arm's answer cut to what the participant saw."""
        record = finished.record
        shown = {"off": finished.off_text, "on": finished.on_text}
        with self._lock:
            for arm in SHOWN_ARMS:
                answer = record.answer(arm)
                if arm in self._stopped and answer is not None:
                    answer.text, answer.finish_reason, answer.tokens_out = self._texts[arm], "stopped", None
                    shown[arm] = self._texts[arm]
                self._texts[arm] = shown[arm]
        return record

    def _shown(self, turn_id: int, record: TurnRecord) -> ShownTurn:
        decision = record.decision
        answers = {arm: record.answer(arm) for arm in SHOWN_ARMS}
        return ShownTurn(
            turn_id=turn_id,
            prompt=self.prompt,
            texts=dict(self._texts),
            notes={arm: list(notes) for arm, notes in self._notes.items()},
            stopped=sorted(self._stopped),
            handed_off=decision.handed_off and decision.blocked_by is None,
            blocked_by=decision.blocked_by,
            reason=decision.reason,
            latency_ms={arm: answer.latency_ms if answer else None for arm, answer in answers.items()},
            category=self.category,
            display="fair" if self.fair else "live",
            policy=decision.policy,
            energy_wh={arm: answer.energy_wh if answer else None for arm, answer in answers.items()},
            cloud_cost={
                arm: answer.cost if answer and answer.source == "cloud" else None for arm, answer in answers.items()
            },
        )
