"""One turn of a side-by-side comparison: the local answer (handoff off) and the handoff arm.

The local answer is generated once and shared while both arms have the same history; the handoff
arm shows it too unless the policy hands off, in which case it shows the cloud answer for the same
conversation. If the cloud fails, the handoff arm falls back to the local answer with a note.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from feedback.language import detect_language
from feedback.records import AnswerRecord, DecisionRecord, TurnRecord
from playground.engine.cloud import CloudClient, CloudResult
from playground.engine.local import Generation, LocalEngine, LocalResult
from playground.handoff.policies import HandoffDecision, Policy, PolicyInput, decide
from playground.settings import Settings

Arm = Literal["off", "on"]
Message = dict[str, str]


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


TurnEvent = Delta | Status | Finished


class Comparison:
    """Wires the shared engine, the cloud client and the live policy for one event."""

    def __init__(
        self, engine: LocalEngine, cloud: CloudClient, policy: Policy, threshold: float, settings: Settings
    ) -> None:
        self.engine = engine
        self.cloud = cloud
        self.policy = policy
        self.threshold = threshold
        self.settings = settings

    def _messages(self, history: list[Message], prompt: str) -> list[Message]:
        return [{"role": "system", "content": self.settings.system_prompt}, *history, {"role": "user", "content": prompt}]

    def _generate(self, messages: list[Message]) -> Generation:
        s = self.settings
        return self.engine.generate(messages, max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p)

    def run(
        self, prompt: str, history_off: list[Message], history_on: list[Message], category: str | None = None
    ) -> Iterator[TurnEvent]:
        """Yield text deltas for each arm as they arrive, then one ``Finished`` with the record."""
        messages_off = self._messages(history_off, prompt)
        messages_on = self._messages(history_on, prompt)
        generation_off = self._generate(messages_off)
        shared = history_off == history_on
        generation_on = generation_off if shared else self._generate(messages_on)

        yield Status("on", "thinking")
        for delta in generation_off:
            yield Delta("off", delta)
        local_off = generation_off.wait()
        local_on = local_off if shared else generation_on.wait()

        decision = decide(
            self.policy,
            self.threshold,
            PolicyInput(messages_on, local_on.text, local_on.logprobs, local_on.entropies),
        )
        cloud: CloudResult | None = None
        if decision.handoff:
            yield Status("on", "handing off to the cloud model")
            stream = self.cloud.stream(messages_on)
            for delta in stream:
                yield Delta("on", delta)
            cloud = stream.result
            assert cloud is not None
            if not cloud.ok:
                yield Status("on", f"the cloud model failed ({cloud.error_kind}); showing the local answer")
        if cloud is None or not cloud.ok:
            yield Delta("on", local_on.text)
        on_text = cloud.text if cloud is not None and cloud.ok else local_on.text
        record = TurnRecord(
            prompt=prompt,
            language=detect_language(prompt),
            category=category,
            decision=_decision_record(decision, cloud),
            answers=[_local_answer("off", local_off), _on_answer(local_on, cloud)],
        )
        yield Finished(record=record, off_text=local_off.text, on_text=on_text)


def _decision_record(decision: HandoffDecision, cloud: CloudResult | None) -> DecisionRecord:
    return DecisionRecord(
        policy=decision.policy,
        policy_version=decision.version,
        stage=decision.stage,
        threshold=decision.threshold,
        score=decision.score,
        handed_off=decision.handoff,
        reason=decision.reason,
        blocked_by="cloud_error" if cloud is not None and not cloud.ok else None,
        latency_ms=decision.latency_ms,
        signals=decision.signals,
    )


def _local_answer(arm: Arm, local: LocalResult) -> AnswerRecord:
    return AnswerRecord(
        arm=arm,
        source="local",
        text=local.text,
        model=local.model,
        model_revision=local.model_revision,
        dtype=local.dtype,
        tokens_in=local.tokens_in,
        tokens_out=local.tokens_out,
        ttft_ms=local.ttft_ms,
        latency_ms=local.latency_ms,
        finish_reason=local.finish_reason,
    )


def _on_answer(local: LocalResult, cloud: CloudResult | None) -> AnswerRecord:
    if cloud is None:
        return _local_answer("on", local)
    if not cloud.ok:
        answer = _local_answer("on", local)
        answer.retries, answer.error_kind, answer.error = cloud.retries, cloud.error_kind, cloud.error
        answer.base_url_host = cloud.base_url_host
        return answer
    return AnswerRecord(
        arm="on",
        source="cloud",
        text=cloud.text,
        model=cloud.model,
        base_url_host=cloud.base_url_host,
        tokens_in=cloud.tokens_in,
        tokens_out=cloud.tokens_out,
        ttft_ms=cloud.ttft_ms,
        latency_ms=local.latency_ms + cloud.latency_ms,
        finish_reason=cloud.finish_reason,
        retries=cloud.retries,
    )
