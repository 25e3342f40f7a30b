"""Repetition as a handoff signal: stored with the other signals, scored by the confidence policy
(version 2), and replayed exactly next to rows stored by version 1."""

from __future__ import annotations

import numpy as np

from db.models import Event
from db.session import session_scope
from feedback.capture import join_event, record_turn, start_conversation
from feedback.export import ExportFilters
from feedback.records import AnswerRecord, DecisionRecord, TurnRecord
from feedback.repetition import LoopRule
from feedback.replay import replay_database
from playground.handoff.base import PolicyInput
from playground.handoff.policies import ConfidencePolicy, decide
from tests.factories import make_event
from tests.test_repetition import LOOP, PROSE

MESSAGES = [{"role": "user", "content": "Write a poem."}]
SURE = ([-0.01] * 40, [0.1] * 40)  # a draft the model was sure of, token by token


def v1_score(signals: dict) -> float:
    """The confidence policy as version 1 scored it (what old rows store)."""
    clip = lambda v: min(1.0, max(0.0, v))  # noqa: E731
    return (
        0.4 * clip(-signals["p10_logprob"] / 6)
        + 0.2 * clip(-signals["min_logprob"] / 12)
        + 0.2 * clip(signals["mean_entropy"] / 3)
        + 0.2 * clip(signals["max_entropy"] / 6)
    )


def test_a_confidently_written_loop_is_handed_off_and_says_why() -> None:
    loop = decide(ConfidencePolicy(), 0.5, PolicyInput(MESSAGES, LOOP, *SURE))
    prose = decide(ConfidencePolicy(), 0.5, PolicyInput(MESSAGES, PROSE, *SURE))
    assert ConfidencePolicy.version == "2"
    assert v1_score(loop.signals) < 0.05  # version 1 would have kept it local
    assert loop.handoff and loop.score == loop.signals["repetition"] == 1.0
    assert loop.reason.startswith("repetition:") and loop.signals["looped"] is True
    assert loop.signals["scores"]["confidence"] == loop.score
    assert not prose.handoff and prose.score == v1_score(prose.signals) and prose.signals["looped"] is False


def test_every_decision_stores_the_repetition_signals_with_the_rule_it_was_given() -> None:
    strict = decide(ConfidencePolicy(), 0.5, PolicyInput(MESSAGES, LOOP, *SURE), loop_rule=LoopRule(share=1.0))
    loose = decide(ConfidencePolicy(), 0.5, PolicyInput(MESSAGES, "tea " * 20, *SURE), loop_rule=LoopRule(window=8))
    for decision in (strict, loose):
        assert {"looped", "repetition", "repeated_ngram_share", "loop_at_word"} <= set(decision.signals)
    assert strict.signals["looped"] and loose.signals["looped"]
    assert not decide(ConfidencePolicy(), 0.5, PolicyInput(MESSAGES, "tea " * 20, *SURE)).signals["looped"]


def test_replay_is_exact_over_rows_of_both_policy_versions(db_url: str) -> None:
    """Old rows keep their version-1 scores, new ones carry version 2's: replay reads the stored score."""
    rng = np.random.default_rng(3)
    live, handed = 0.5, 0
    event_id = make_event(db_url, "MIXED-1", "sf")
    with session_scope(db_url) as session:
        participant = join_event(session, session.get(Event, event_id))
        for i in range(24):
            n = int(rng.integers(8, 40))
            draft = LOOP if i % 4 == 0 else PROSE
            data = PolicyInput(
                MESSAGES, draft, list(-rng.exponential(rng.uniform(0.1, 2), n)), list(rng.uniform(0, 3, n))
            )
            decision = decide(ConfidencePolicy(), live, data)
            if i % 2:  # stored before version 2: no repetition signals, the version-1 score
                signals = {k: v for k, v in decision.signals.items() if k not in ("looped", "repetition")}
                score = v1_score(signals)
                signals["scores"] = {"confidence": score}
                version, handoff = "1", score >= live
            else:
                signals, score, version, handoff = decision.signals, decision.score, decision.version, decision.handoff
            handed += handoff
            record = TurnRecord(
                prompt=f"q{i}",
                decision=DecisionRecord("confidence", version, "post", live, score, handoff, 1.0, signals),
                answers=[AnswerRecord("off", "local", draft, "SmolLM2-135M-Instruct")],
            )
            record_turn(session, start_conversation(session, participant).id, record)
    result = replay_database(db_url, ExportFilters(event="MIXED-1"), "confidence", [live])
    point = next(p for p in result.points if p.threshold == live)
    assert 0 < handed < 24
    assert point.handoff_rate == result.live_handoff_rate == handed / 24
