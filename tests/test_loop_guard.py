"""A draft that starts repeating itself is stopped, on the real bundled model: the guard alone, then a
whole turn through the comparison (finish reason, stored signals, handoff) and the limerick of issue 14."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from db.models import Answer, HandoffDecision
from db.session import session_scope
from feedback.repetition import repetition
from playground.engine.loop_guard import REPETITION, LoopGuard
from playground.handoff.policies import ConfidencePolicy
from playground.runtime import local_engine
from playground.settings import Settings
from tests.conftest import MODEL_CACHE
from tests.handoff_helpers import comparison, event_with_participant, fast, run_turn, store
from tests.test_decoding import LOOPING, OLD, SYSTEM

pytestmark = pytest.mark.slow
PINNED = "float32"  # "auto" picks by a timed probe, which a loaded machine can flip: greedy text must not change
LIMERICK = [SYSTEM, {"role": "user", "content": "Write a limerick about a robot who loves tea"}]


def most_repeated_line(text: str) -> int:
    lines = Counter(line.strip() for line in text.splitlines() if line.strip())
    return max(lines.values(), default=0)


def test_the_guard_stops_a_looping_draft_with_finish_reason_repetition() -> None:
    engine = local_engine(Settings(model_cache_dir=MODEL_CACHE, local_dtype=PINNED))
    free = engine.generate(LOOPING, temperature=0.0, max_new_tokens=160, **OLD)  # each alone: the same greedy draft
    unguarded_text = "".join(free)
    guarded = LoopGuard(engine.generate(LOOPING, temperature=0.0, max_new_tokens=160, **OLD), Settings().loop_rule)
    streamed = "".join(guarded)
    result = guarded.wait(timeout=900)
    assert free.wait().finish_reason == "length" and most_repeated_line(unguarded_text) >= 5
    assert guarded.looped and result.finish_reason == REPETITION and guarded.result is result
    assert result.tokens_out < 100 and streamed == result.text
    assert unguarded_text.startswith(result.text)  # the same draft, cut where it began to loop
    assert most_repeated_line(result.text) <= 3


def test_a_turn_whose_draft_loops_is_stopped_stored_as_repetition_and_handed_off(
    standin: Settings, sqlite_url: str
) -> None:
    settings = fast(
        standin, max_new_tokens=120, temperature=0.0, repetition_penalty=1.0, early_handoff=False, local_dtype=PINNED
    )
    _, finished = run_turn(comparison(settings, ConfidencePolicy(), 0.5), LOOPING[-1]["content"])
    _, participant = event_with_participant(sqlite_url)
    store(sqlite_url, participant, finished)
    with session_scope(sqlite_url) as session:
        off = session.scalars(select(Answer).where(Answer.arm == "off")).one()
        decision = session.scalars(select(HandoffDecision)).one()
        assert off.finish_reason == REPETITION and off.tokens_out < 120
        assert off.decoding["repetition_penalty"] == 1.0
        assert decision.signals["looped"] is True and decision.signals["repetition"] >= settings.loop_share
        assert decision.handed_off and decision.score == decision.signals["scores"]["confidence"]
        assert decision.reason.startswith("repetition:")


def test_the_limerick_no_longer_repeats_a_line_with_the_default_decoding() -> None:
    engine = local_engine(Settings(model_cache_dir=MODEL_CACHE, local_dtype=PINNED))
    defaults = Settings()
    drafts = [LoopGuard(engine.generate(LIMERICK, seed=seed), defaults.loop_rule) for seed in range(6)]
    drafts.append(LoopGuard(engine.generate(LIMERICK, temperature=0.0), defaults.loop_rule))
    texts = ["".join(draft) for draft in drafts]
    for draft, text in zip(drafts, texts, strict=True):
        assert draft.wait(timeout=900).decoding["repetition_penalty"] == defaults.repetition_penalty
        assert most_repeated_line(text) < 3, text
        assert not repetition(text).looped, text
