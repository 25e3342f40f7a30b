"""One turn of a side-by-side comparison: the local answer (handoff off) and the handoff arm.

The local answer is generated once and shared while both arms have the same history; the handoff
arm shows it too unless the policy hands off, in which case it shows the cloud answer for the same
conversation. Everything that can run at once does, on threads, and ``Comparison.run`` yields the
deltas of both arms interleaved as they arrive:

- a ``pre`` policy decides before local generation, so its cloud call starts at once, in parallel;
- a ``post`` policy marked ``early`` is scored on the draft while it is written; once the running
  score crosses the threshold the cloud call starts (and the handoff arm's own draft, if it is not
  shared with the off arm, is stopped). The stored score is the highest running score, so
  ``score >= threshold`` is exactly the live decision, at any threshold when the draft completed;
- with probability ε (the shadow rate) the cloud is called at the start of a turn regardless of
  the policy; if the policy then keeps the answer local, that call is stored as a never-shown
  ``shadow`` answer with propensity ε, and if the policy hands off it becomes the handoff answer.

Every cloud call passes the participant's rate limit and reserves its worst-case cost from the
event budget first; when either refuses, the answer stays local and a ``Status`` says why. If the
cloud fails, the handoff arm falls back to the local answer with a note. Notes are ``Note``s named by
message key (``note.*`` in the interface catalogs), so the reveal shows them in the attendee's language.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from feedback.records import TurnRecord
from playground.engine.cloud import CloudClient
from playground.engine.contract import AnswerResult, AnswerStream, LocalModelEngine, LocalResult
from playground.engine.loop_guard import LoopGuard
from playground.handoff.base import Policy, PolicyInput
from playground.handoff.budget import EventBudget, ParticipantRateLimit, Reservation
from playground.handoff.policies import ConfidencePolicy, PolicyDecision, decide
from playground.handoff.router import RouterPolicy
from playground.handoff.signals import token_signals
from playground.recording import turn_record
from playground.settings import Settings

Arm = Literal["off", "on"]
Message = dict[str, str]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Note:
    """A pane note, named by its message key in the interface catalogs: the page translates it."""

    key: str  # note.* in playground/locales/
    params: dict[str, Any] = field(default_factory=dict)


THINKING_NOTE = Note("note.thinking")
HANDOFF_NOTE = Note("note.handing_off")
BUDGET_NOTE = Note("note.budget_spent")
RATE_NOTE = Note("note.rate_limited")


def cloud_failed_note(kind: str | None) -> Note:
    return Note("note.cloud_failed", {"kind": kind})


@dataclass
class Delta:
    arm: Arm
    text: str


@dataclass
class Status:
    arm: Arm
    note: Note


@dataclass
class Finished:
    record: TurnRecord
    off_text: str
    on_text: str
    notes: list[Note] = field(default_factory=list)  # the handoff arm's notes (budget, rate limit, failure)


TurnEvent = Delta | Status | Finished


class Comparison:
    """Wires the shared engine, the cloud client, the live policy and the event's guards."""

    def __init__(
        self,
        engine: LocalModelEngine,
        cloud: CloudClient,
        policy: Policy,
        threshold: float,
        settings: Settings,
        *,
        budget: EventBudget | None = None,
        rate_limit: ParticipantRateLimit | None = None,
        shadow_rate: float | None = None,
        router: RouterPolicy | None = None,
        policy_note: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.cloud = cloud
        self.policy = policy
        self.threshold = threshold
        self.settings = settings
        self.budget = budget
        self.rate_limit = rate_limit
        self.shadow_rate = settings.shadow_rate if shadow_rate is None else shadow_rate
        self.router = router
        self.policy_note = policy_note
        self.rng = rng or random.Random()

    def messages(self, history: list[Message], prompt: str) -> list[Message]:
        """Exactly what the models see (and all the cloud gets): system prompt and turns."""
        return [
            {"role": "system", "content": self.settings.system_prompt},
            *history,
            {"role": "user", "content": prompt},
        ]

    def generate(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> AnswerStream:
        """Start a local draft with the settings' decoding; a draft that loops is stopped (``LoopGuard``)."""
        s = self.settings
        options: dict[str, Any] = {"tools": tools} if tools else {}
        generation = self.engine.generate(
            messages,
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            repetition_penalty=s.repetition_penalty,
            no_repeat_ngram_size=s.no_repeat_ngram_size,
            **options,
        )
        return LoopGuard(generation, s.loop_rule) if s.stop_loops else generation  # type: ignore[return-value]

    def run(
        self,
        prompt: str,
        history_off: list[Message],
        history_on: list[Message],
        category: str | None = None,
        participant_id: int | None = None,
    ) -> Iterator[TurnEvent]:
        """Yield text deltas of both arms as they arrive, notes as ``Status``, then one ``Finished``."""
        turn = _Turn(self, prompt, history_off, history_on, participant_id)
        try:
            yield from turn.events()
        finally:
            turn.cancel_local()
        yield turn.finished(category)


class _Answer:
    """One answer being written, local or cloud, pumped on its own thread into the turn's queue.

    Both arms are driven the same way through the stream contract; ``parts`` keeps what arrived so
    a cloud call that becomes the handoff answer mid-way can show it in one piece (``flushed``).
    A cloud call settles its budget reservation when it ends.
    """

    def __init__(self, turn: _Turn, key: str, stream: AnswerStream, reservation: Reservation | None = None) -> None:
        self.turn = turn
        self.key = key  # shared | off | on | on_fallback | cloud
        self.stream = stream
        self.reservation = reservation
        self.parts: list[str] = []
        self.shown = False  # a cloud call: it is the handoff arm's answer
        self.flushed = 0  # deltas already shown in one piece when the call became the handoff answer
        self.done_seen = False  # the consumer has processed this answer's end
        self.result: AnswerResult | None = None  # set by the consumer when it sees the end
        self.charged = None
        threading.Thread(target=self._pump, name=f"answer-{key}", daemon=True).start()

    @property
    def cloud(self) -> bool:
        return self.key == "cloud"

    def _pump(self) -> None:
        try:
            for delta in self.stream:
                self.parts.append(delta)
                self.turn.queue.put(("delta", self, (len(self.parts) - 1, delta)))
        except BaseException:  # noqa: BLE001 - a local engine's failure: raised again by wait() in the consumer
            pass
        try:
            budget = self.turn.comparison.budget
            if self.reservation is not None and budget is not None:
                self.charged = budget.settle(self.reservation, self.stream.wait())
        except Exception:  # noqa: BLE001 - the reservation stays charged: safe for the budget
            log.exception("settling the cloud budget failed; the reservation stays charged")
        finally:
            self.turn.queue.put(("done", self, None))


class _Turn:
    """The state of one running turn; ``events`` is the single consumer of its queue."""

    def __init__(
        self,
        comparison: Comparison,
        prompt: str,
        history_off: list[Message],
        history_on: list[Message],
        participant_id: int | None,
    ) -> None:
        self.comparison = comparison
        self.settings = comparison.settings
        self.policy = comparison.policy
        self.prompt = prompt
        self.participant_id = participant_id
        self.messages_off = comparison.messages(history_off, prompt)
        self.messages_on = comparison.messages(history_on, prompt)
        self.tools = getattr(self.policy, "tools", None)
        self.shared = history_off == history_on and not self.tools
        self.queue: queue.Queue[tuple[str, _Answer, Any]] = queue.Queue()
        self.started = time.perf_counter()
        self.answers: dict[str, _Answer] = {}
        self.live = 0
        self.decision: PolicyDecision | None = None
        self.handoff_wanted = False
        self.blocked_by: str | None = None
        self.handoff_call: _Answer | None = None
        self.speculative: _Answer | None = None
        self.shadow: dict[str, Any] = {"drawn": False}
        self.running_max: float | None = None
        self.early_token: int | None = None
        self.decided_after_ms: float | None = None
        self.on_text: str | None = None
        self.on_fallback = False
        self.on_draft_stopped = False
        self.notes: list[Note] = []
        self.extra: dict[str, Any] = {}

    def _start(self, key: str, stream: AnswerStream, reservation: Reservation | None = None) -> _Answer:
        answer = self.answers[key] = _Answer(self, key, stream, reservation)
        self.live += 1
        return answer

    def _start_local(self, key: str, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> None:
        self._start(key, self.comparison.generate(messages, tools))

    def local(self, key: str) -> AnswerResult | None:
        """A finished local answer's result (None while it runs or when it was never made)."""
        answer = self.answers.get(key)
        return answer.result if answer is not None else None

    @property
    def on_key(self) -> str:
        return "shared" if self.shared else "on"

    def cancel_local(self) -> None:
        """Stop every local answer still running (a closed generator, an error); cloud calls end and are charged."""
        for answer in self.answers.values():
            if not answer.cloud and answer.stream.result is None:
                answer.stream.stop()

    # --- cloud calls ------------------------------------------------------------------------
    def _start_cloud(self) -> _Answer | str:
        """A started call, or why none may be made (``budget`` | ``rate_limit``).

        The budget is checked first: while an event's budget is spent no call can be made, so none
        may use up one of the participant's calls. A reservation refused by the rate limit is given back.
        """
        comparison, budget = self.comparison, self.comparison.budget
        reservation = None
        if budget is not None:
            reservation = budget.reserve(comparison.cloud.max_cost(self.messages_on))
            if reservation is None:
                return "budget"
        if comparison.rate_limit is not None and self.participant_id is not None:
            if not comparison.rate_limit.allow(self.participant_id):
                if reservation is not None:  # only made where there is a budget
                    budget.release(reservation)
                return "rate_limit"
        return self._start("cloud", comparison.cloud.generate(self.messages_on), reservation)

    def _hand_off(self) -> Iterator[TurnEvent]:
        """Show a cloud answer in the handoff arm: the speculative call if one runs, else a new one."""
        self.handoff_wanted = True
        self.decided_after_ms = (time.perf_counter() - self.started) * 1000
        call = self.speculative
        self.speculative = None
        if call is None:
            started = self._start_cloud()
            if isinstance(started, str):
                self.blocked_by = started
                note = BUDGET_NOTE if started == "budget" else RATE_NOTE
                self.notes.append(note)
                yield Status("on", note)
                return
            call = started
        else:
            self.shadow["used_as_handoff"] = True
        self.handoff_call = call
        call.shown = True
        yield Status("on", HANDOFF_NOTE)
        call.flushed = len(call.parts)
        if call.flushed:
            yield Delta("on", "".join(call.parts[: call.flushed]))
        on_draft = self.answers.get("on")
        if on_draft is not None and on_draft.stream.result is None:
            on_draft.stream.stop()  # the handoff pane will not show this draft
            self.on_draft_stopped = True
        if call.done_seen:  # the speculative call had already finished
            yield from self._cloud_finished(call)

    def _cloud_finished(self, call: _Answer) -> Iterator[TurnEvent]:
        assert call.result is not None
        if call.result.ok:
            self.on_text = call.result.text
            return
        note = cloud_failed_note(call.result.error_kind)  # type: ignore[attr-defined]
        self.notes.append(note)
        yield Status("on", note)
        yield from self._show_local_on()

    def _show_local_on(self) -> Iterator[TurnEvent]:
        """The handoff arm shows the local answer (kept local, blocked, or cloud failed)."""
        if self.on_text is not None:
            return
        self.on_fallback = True
        draft = self.answers.get(self.on_key)
        # A self-handoff draft that called the tool is a tool call, not an answer.
        if draft is not None and not self.on_draft_stopped and not (self.tools and self.handoff_wanted):
            result = draft.result
            if result is not None:  # else it is shown when the draft finishes
                self.on_text = result.text
                yield Delta("on", result.text)
            return
        if "on_fallback" not in self.answers:  # its draft was stopped or never made
            self._start_local("on_fallback", self.messages_on)

    # --- the policy ---------------------------------------------------------------------------
    def _pre_decide(self) -> Iterator[TurnEvent]:
        router = self.comparison.router
        if router is not None and self.policy.name != "router":
            self.extra["scores"] = {"router": router.score_prompt(self.prompt)}
        self.decision = decide(self.policy, self.comparison.threshold, PolicyInput(self.messages_on), dict(self.extra))
        self.decided_after_ms = (time.perf_counter() - self.started) * 1000
        if self.decision.handoff:
            yield from self._hand_off()

    def _running_score(self) -> Iterator[TurnEvent]:
        """Early handoff: score the draft so far; hand off once it crosses the threshold."""
        draft = self.answers[self.on_key].stream
        n = len(draft.logprobs)
        if n < self.settings.early_min_tokens:
            return
        logprobs, entropies = draft.logprobs[:n], draft.entropies[:n]
        data = PolicyInput(self.messages_on, "", logprobs, entropies)
        score, _ = self.policy.score(data, token_signals(logprobs, entropies))
        self.running_max = score if self.running_max is None else max(self.running_max, score)
        if not self.handoff_wanted and score >= self.comparison.threshold:
            self.early_token = n
            yield from self._hand_off()

    def _post_decide(self, result: AnswerResult) -> Iterator[TurnEvent]:
        router = self.comparison.router
        if router is not None:
            self.extra["scores"] = {"router": router.score_prompt(self.prompt)}
        early = self.policy.early and self.settings.early_handoff
        self.decision = decide(
            self.policy,
            self.comparison.threshold,
            PolicyInput(self.messages_on, result.text, result.logprobs, result.entropies),
            dict(self.extra),
            running_max=self.running_max if early else None,
            loop_rule=self.settings.loop_rule,
        )
        if self.decided_after_ms is None:
            self.decided_after_ms = (time.perf_counter() - self.started) * 1000
        if self.decision.handoff and not self.handoff_wanted:
            yield from self._hand_off()

    # --- the loop -----------------------------------------------------------------------------
    def events(self) -> Iterator[TurnEvent]:
        pre = self.policy.stage == "pre"
        self._start_local("shared" if self.shared else "off", self.messages_off)
        yield Status("on", THINKING_NOTE)
        if pre:
            yield from self._pre_decide()
        if not self.handoff_wanted:
            self.shadow["drawn"] = self.comparison.rng.random() < self.comparison.shadow_rate
            if self.shadow["drawn"]:
                started = self._start_cloud()
                if isinstance(started, str):
                    self.shadow["blocked_by"] = started
                else:
                    self.speculative = started
        if not self.shared and not (pre and self.handoff_call is not None):
            self._start_local("on", self.messages_on, self.tools)
        early = not pre and self.policy.early and self.settings.early_handoff

        while self.live:
            kind, answer, payload = self.queue.get()
            if kind == "delta":
                index, delta = payload
                if answer.cloud:
                    if answer.shown and index >= answer.flushed:
                        yield Delta("on", delta)
                    continue
                if answer.key in ("shared", "off"):
                    yield Delta("off", delta)
                if answer.key == "on_fallback":
                    yield Delta("on", delta)
                if early and answer.key == self.on_key:
                    yield from self._running_score()
                continue
            self.live -= 1
            answer.done_seen = True
            result = answer.result = answer.stream.wait()  # a local engine's failure is raised here
            if answer.cloud:
                if answer is self.handoff_call:
                    yield from self._cloud_finished(answer)
            elif answer.key == "on_fallback":
                self.on_text = result.text
            elif answer.key == self.on_key:
                if not pre and self.decision is None:
                    yield from self._post_decide(result)
                if self.handoff_call is None or self.on_fallback:
                    yield from self._show_local_on()

    # --- the record -----------------------------------------------------------------------------
    def finished(self, category: str | None) -> Finished:
        """The turn as it is stored: the policy's decision with the draft's signals, and every answer."""
        assert self.decision is not None and self.on_text is not None
        off = self.local("shared" if self.shared else "off")
        assert off is not None
        kept_local = not self.decision.handoff
        call = self.handoff_call
        shadow = self.speculative if kept_local else None
        self.shadow["made"] = shadow is not None
        record = turn_record(
            self.prompt,
            category,
            self.decision.record(
                signals=self._signals(off),
                blocked_by="cloud_error"
                if call is not None and call.result is not None and not call.result.ok
                else self.blocked_by,
                shadow_propensity=self.comparison.shadow_rate if kept_local else None,
                engine=off.engine,
            ),
            off=off,
            on=call.result if call is not None else None,  # type: ignore[arg-type]
            on_local=self.local("on_fallback") or self.local(self.on_key),
            shadow=shadow.result if shadow is not None else None,  # type: ignore[arg-type]
            settings=self.settings,
        )
        return Finished(record=record, off_text=off.text, on_text=self.on_text, notes=list(self.notes))

    def _signals(self, off: LocalResult) -> dict[str, Any]:
        """The decision's signals, with the handoff arm's draft statistics and how the turn went."""
        decision = self.decision
        assert decision is not None
        signals = decision.signals
        if decision.stage == "pre":  # the token statistics of the handoff arm's draft, when there is one
            on_draft = self.local(self.on_key) or self.local("on_fallback")
            if on_draft is not None and (on_draft.logprobs or not on_draft.text):  # a server may give none
                data = PolicyInput(self.messages_on, on_draft.text, on_draft.logprobs, on_draft.entropies)
                post = decide(
                    ConfidencePolicy(), self.comparison.threshold, data, loop_rule=self.settings.loop_rule
                ).signals
                signals.update({k: v for k, v in post.items() if k not in ("scores", "decision_latency_ms")})
                signals["scores"]["confidence"] = post["scores"]["confidence"]
        signals.update(
            early=self.early_token is not None,
            early_token=self.early_token,
            score_complete=not self.on_draft_stopped or decision.stage == "pre",
            decided_after_ms=self.decided_after_ms,
            local_latency_ms=off.latency_ms,
            shadow=self.shadow,
            requested_policy_note=self.comparison.policy_note,
            engine=engine_signals(self.comparison.engine, off),
        )
        return signals


def engine_signals(engine: LocalModelEngine, local: LocalResult) -> dict[str, Any]:
    """Which local engine and server produced the tokens the policy scored (never a key or full URL).

    ``entropy_from_top_k`` is k when entropies were computed from the server's top-k log-probs
    (a lower bound), None when from the full distribution.
    """
    return {
        "kind": local.engine,
        "host": local.base_url_host,
        "model": local.model,
        "revision": local.model_revision,
        "gives_logprobs": bool(getattr(engine, "gives_logprobs", True)),
        "entropy_from_top_k": local.entropy_from_top_k,
    }
