"""A stored live run replays exactly: recomputing ``score >= threshold`` gives the live handoff rate."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import HandoffDecision
from db.session import session_scope
from feedback.export.dataset import ExportFilters
from feedback.replay import replay_database
from playground.handoff.policies import ConfidencePolicy
from playground.settings import Settings
from tests.handoff_helpers import comparison, event_with_participant, fast, run_turn, store

pytestmark = pytest.mark.slow
PROMPTS = [
    "What is the capital of Japan?",
    "Write a haiku about a compiler error.",
    "What is 17 times 23?",
    "Summarize the plot of an imaginary novel in one sentence.",
    "Name three prime numbers.",
    "Explain recursion to a five year old.",
]


def test_replay_at_the_live_threshold_reproduces_the_live_handoff_rate(standin: Settings, sqlite_url: str) -> None:
    settings = fast(standin, max_new_tokens=12, early_min_tokens=4, shadow_rate=0.5)
    event_id, participant = event_with_participant(sqlite_url, code="REPLAY-1")
    threshold = 0.2
    live = comparison(settings, ConfidencePolicy(), threshold, sqlite_url, event_id)
    for prompt in PROMPTS:
        store(sqlite_url, participant, run_turn(live, prompt, participant)[1])

    with session_scope(sqlite_url) as session:
        decisions = session.scalars(select(HandoffDecision)).all()
        live_rate = sum(d.handed_off for d in decisions) / len(decisions)
        assert all((d.score >= d.threshold) == d.handed_off for d in decisions)
        assert all(d.signals["scores"]["confidence"] == d.score for d in decisions)
        assert all(d.shadow_propensity == 0.5 for d in decisions if not d.handed_off)

    result = replay_database(sqlite_url, ExportFilters(event="REPLAY-1"), "confidence", [threshold, 0.0, 1.01])
    by_threshold = {p.threshold: p for p in result.points}
    assert result.live_handoff_rate == live_rate
    assert by_threshold[threshold].handoff_rate == live_rate
    assert by_threshold[0.0].handoff_rate == 1.0 and by_threshold[1.01].handoff_rate == 0.0
