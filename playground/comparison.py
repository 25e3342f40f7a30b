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
cloud fails, the handoff arm falls back to the local answer with a note.
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

from feedback import energy
from feedback.language import detect_language
from feedback.records import AnswerRecord, DecisionRecord, TurnRecord
from playground.engine.cloud import CloudClient, CloudResult, CloudStream
from playground.engine.engines import LocalModelEngine
from playground.engine.local import Generation, LocalResult
from playground.engine.loop_guard import LoopGuard
from playground.handoff.base import Policy, PolicyInput
from playground.handoff.budget import EventBudget, ParticipantRateLimit, Reservation
from playground.handoff.policies import HandoffDecision, decide
from playground.handoff.router import RouterPolicy
from playground.handoff.signals import token_signals
from playground.settings import Settings

Arm = Literal["off", "on"]
Message = dict[str, str]

BUDGET_NOTE = "The event's cloud budget is spent, so handoff is paused: this answer stayed local."
RATE_NOTE = "You reached the limit of cloud requests for now, so this answer stayed local."
HANDOFF_NOTE = "handing off to the cloud model"
log = logging.getLogger(__name__)


def cloud_failed_note(kind: str | None) -> str:
    return f"The cloud model failed ({kind}), so this is the local answer."


@dataclass
class Delta:
    arm: Arm
    text: str


@dataclass
class Status:
    arm: Arm
    message: str


@dataclass
class Finished:
    record: TurnRecord
    off_text: str
    on_text: str
    notes: list[str] = field(default_factory=list)  # the handoff arm's notes (budget, rate limit, failure)


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

    def generate(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> Generation:
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


class _CloudCall:
    """One cloud call on its own thread; its deltas go to the turn's queue, shown or not."""

    def __init__(self, turn: _Turn, reservation: Reservation | None) -> None:
        self.turn = turn
        self.reservation = reservation
        self.stream: CloudStream = turn.comparison.cloud.stream(turn.messages_on)
        self.parts: list[str] = []
        self.shown = False
        self.flushed = 0  # deltas already shown in one piece when the call became the handoff answer
        self.done_seen = False  # the consumer has processed this call's end
        self.result: CloudResult | None = None
        self.charged = None
        threading.Thread(target=self._run, name="cloud-call", daemon=True).start()

    def _run(self) -> None:
        try:
            for delta in self.stream:
                self.parts.append(delta)
                self.turn.queue.put(("cloud", self, (len(self.parts) - 1, delta)))
            self.result = self.stream.result
        except Exception as error:  # noqa: BLE001 - a bug here must not hang the turn
            log.exception("cloud call failed unexpectedly")
            self.result = _internal_failure(self.turn.comparison.cloud, "".join(self.parts), error)
        try:
            budget = self.turn.comparison.budget
            if self.reservation is not None and budget is not None:
                self.charged = budget.settle(self.reservation, self.result)
        except Exception:  # noqa: BLE001 - the reservation stays charged: safe for the budget
            log.exception("settling the cloud budget failed; the reservation stays charged")
        finally:
            self.turn.queue.put(("cloud_done", self, None))


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
        self.queue: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self.started = time.perf_counter()
        self.generations: dict[str, Generation] = {}
        self.local: dict[str, LocalResult] = {}
        self.live_local = 0
        self.live_cloud = 0
        self.decision: HandoffDecision | None = None
        self.handoff_wanted = False
        self.blocked_by: str | None = None
        self.handoff_call: _CloudCall | None = None
        self.speculative: _CloudCall | None = None
        self.shadow: dict[str, Any] = {"drawn": False}
        self.running_max: float | None = None
        self.early_token: int | None = None
        self.decided_after_ms: float | None = None
        self.on_text: str | None = None
        self.on_fallback = False
        self.on_draft_stopped = False
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}

    # --- local generations -----------------------------------------------------------------
    def _start_local(self, key: str, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> None:
        generation = self.comparison.generate(messages, tools)
        self.generations[key] = generation
        self.live_local += 1

        def pump() -> None:
            try:
                for delta in generation:
                    self.queue.put(("local", key, delta))
            except BaseException:  # noqa: BLE001 - surfaced by wait() in the consumer
                pass
            self.queue.put(("local_done", key, None))

        threading.Thread(target=pump, name=f"local-{key}", daemon=True).start()

    @property
    def on_key(self) -> str:
        return "shared" if self.shared else "on"

    def cancel_local(self) -> None:
        """Stop every local generation still running (a closed generator, an error)."""
        for generation in self.generations.values():
            if generation.result is None:
                generation.stop()

    # --- cloud calls ------------------------------------------------------------------------
    def _start_cloud(self) -> _CloudCall | str:
        """A started call, or why none may be made (``rate_limit`` | ``budget``)."""
        comparison = self.comparison
        if comparison.rate_limit is not None and self.participant_id is not None:
            if not comparison.rate_limit.allow(self.participant_id):
                return "rate_limit"
        reservation = None
        if comparison.budget is not None:
            reservation = comparison.budget.reserve(comparison.cloud.max_cost(self.messages_on))
            if reservation is None:
                return "budget"
        self.live_cloud += 1
        return _CloudCall(self, reservation)

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
        on_draft = self.generations.get("on")
        if on_draft is not None and on_draft.result is None:
            on_draft.stop()  # the handoff pane will not show this draft
            self.on_draft_stopped = True
        if call.done_seen:  # the speculative call had already finished
            yield from self._cloud_finished(call)

    def _cloud_finished(self, call: _CloudCall) -> Iterator[TurnEvent]:
        assert call.result is not None
        if call.result.ok:
            self.on_text = call.result.text
            return
        note = cloud_failed_note(call.result.error_kind)
        self.notes.append(note)
        yield Status("on", note)
        yield from self._show_local_on()

    def _show_local_on(self) -> Iterator[TurnEvent]:
        """The handoff arm shows the local answer (kept local, blocked, or cloud failed)."""
        if self.on_text is not None:
            return
        self.on_fallback = True
        draft = self.generations.get(self.on_key)
        # A self-handoff draft that called the tool is a tool call, not an answer.
        if draft is not None and not self.on_draft_stopped and not (self.tools and self.handoff_wanted):
            result = self.local.get(self.on_key)
            if result is not None:  # else it is shown when the draft finishes
                self.on_text = result.text
                yield Delta("on", result.text)
            return
        if "on_fallback" not in self.generations:  # its draft was stopped or never made
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
        generation = self.generations[self.on_key]
        n = len(generation.logprobs)
        if n < self.settings.early_min_tokens:
            return
        logprobs, entropies = generation.logprobs[:n], generation.entropies[:n]
        data = PolicyInput(self.messages_on, "", logprobs, entropies)
        score, _ = self.policy.score(data, token_signals(logprobs, entropies))
        self.running_max = score if self.running_max is None else max(self.running_max, score)
        if not self.handoff_wanted and score >= self.comparison.threshold:
            self.early_token = n
            yield from self._hand_off()

    def _post_decide(self, result: LocalResult) -> Iterator[TurnEvent]:
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
        yield Status("on", "thinking")
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

        while self.live_local or self.live_cloud:
            kind, key, payload = self.queue.get()
            if kind == "local":
                if key in ("shared", "off"):
                    yield Delta("off", payload)
                if key == "on_fallback":
                    yield Delta("on", payload)
                if early and key == self.on_key:
                    yield from self._running_score()
            elif kind == "local_done":
                self.live_local -= 1
                result = self.local[key] = self.generations[key].wait()
                if key == "on_fallback":
                    self.on_text = result.text
                elif key == self.on_key:
                    if not pre and self.decision is None:
                        yield from self._post_decide(result)
                    if self.handoff_call is None or self.on_fallback:
                        yield from self._show_local_on()
            elif kind == "cloud":
                index, delta = payload
                if key.shown and index >= key.flushed:
                    yield Delta("on", delta)
            elif kind == "cloud_done":
                self.live_cloud -= 1
                key.done_seen = True
                if key is self.handoff_call:
                    yield from self._cloud_finished(key)

    # --- the record -----------------------------------------------------------------------------
    def finished(self, category: str | None) -> Finished:
        off = self.local["shared" if self.shared else "off"]
        assert self.decision is not None and self.on_text is not None
        decision = self.decision
        signals = decision.signals
        if decision.stage == "pre":  # the token statistics of the handoff arm's draft, when there is one
            on_draft = self.local.get(self.on_key) or self.local.get("on_fallback")
            if on_draft is not None and (on_draft.logprobs or not on_draft.text):  # a server may give none
                data = PolicyInput(self.messages_on, on_draft.text, on_draft.logprobs, on_draft.entropies)
                post = decide(_confidence(), self.comparison.threshold, data, loop_rule=self.settings.loop_rule).signals
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
        call = self.handoff_call
        cloud_error = call is not None and call.result is not None and not call.result.ok
        kept_local = not decision.handoff
        record = DecisionRecord(
            policy=decision.policy,
            policy_version=decision.version,
            stage=decision.stage,
            threshold=decision.threshold,
            score=decision.score,
            handed_off=decision.handoff,
            reason=decision.reason,
            blocked_by="cloud_error" if cloud_error else self.blocked_by,
            latency_ms=decision.latency_ms,
            signals=signals,
            shadow_propensity=self.comparison.shadow_rate if kept_local else None,
            engine=off.engine,
        )
        answers = [_local_answer("off", off)]
        on_local = self.local.get("on_fallback") or self.local.get(self.on_key)
        if call is not None and call.result is not None and call.result.ok:
            answers.append(_cloud_answer("on", call.result))
        else:
            answer = _local_answer("on", on_local)
            if call is not None and call.result is not None:
                _copy_failure(answer, call.result)
            answers.append(answer)
        shadow = self.speculative
        if shadow is not None and shadow.result is not None and kept_local:
            answers.append(_cloud_answer("shadow", shadow.result))
        self.shadow["made"] = shadow is not None and kept_local
        s = self.settings
        for answer in answers:
            energy.annotate(
                answer,
                local_watts=s.local_power_watts,
                provider=s.energy_provider,
                fallback_model=s.energy_fallback_model,
            )
        return Finished(
            record=TurnRecord(
                prompt=self.prompt,
                language=detect_language(self.prompt),
                category=category,
                decision=record,
                answers=answers,
            ),
            off_text=off.text,
            on_text=self.on_text,
            notes=list(self.notes),
        )


def _internal_failure(cloud: CloudClient, text: str, error: BaseException) -> CloudResult:
    settings = cloud.settings
    return CloudResult(
        text=text,
        model=cloud.model,
        base_url_host=settings.cloud_host,
        tokens_in=None,
        tokens_out=None,
        ttft_ms=None,
        latency_ms=0.0,
        finish_reason=None,
        retries=0,
        error_kind="internal",
        error=f"{type(error).__name__}: {error}"[:500],
        price_version=settings.cloud_prices.version,
    )


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


def _confidence() -> Policy:
    from playground.handoff.policies import ConfidencePolicy

    return ConfidencePolicy()


def _local_answer(arm: str, local: LocalResult) -> AnswerRecord:
    return AnswerRecord(
        arm=arm,
        source="local",
        text=local.text,
        model=local.model,
        model_revision=local.model_revision,
        dtype=local.dtype,
        engine=local.engine,
        base_url_host=local.base_url_host,
        tokens_in=local.tokens_in,
        tokens_out=local.tokens_out,
        ttft_ms=local.ttft_ms,
        latency_ms=local.latency_ms,
        finish_reason=local.finish_reason,
        decoding=local.decoding,
    )


def _cloud_answer(arm: str, cloud: CloudResult) -> AnswerRecord:
    answer = AnswerRecord(
        arm=arm,
        source="cloud",
        text=cloud.text,
        model=cloud.model,
        base_url_host=cloud.base_url_host,
        tokens_in=cloud.tokens_in,
        tokens_out=cloud.tokens_out,
        ttft_ms=cloud.ttft_ms,
        latency_ms=cloud.latency_ms,
        finish_reason=cloud.finish_reason,
        decoding=cloud.decoding,
    )
    _copy_failure(answer, cloud)
    return answer


def _copy_failure(answer: AnswerRecord, cloud: CloudResult) -> None:
    """The cloud call's accounting on whichever answer row represents it."""
    answer.base_url_host = cloud.base_url_host
    answer.retries, answer.error_kind, answer.error = cloud.retries, cloud.error_kind, cloud.error
    answer.cost, answer.price_version = cloud.cost, cloud.price_version
