"""Each policy's score and its start-up checks: real model, real sentence encoder, real database."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from db.session import session_scope
from db.vocabulary import winner_pane
from feedback.votes import VoteSubmission, submit_vote
from playground.handoff.base import PolicyInput, PolicyUnavailable
from playground.handoff.policies import (
    AlwaysPolicy,
    ConfidencePolicy,
    NeverPolicy,
    UnknownPolicy,
    decide,
    get_policy,
    resolve_policy,
)
from playground.handoff.router import RouterNotTrainable, RouterPolicy, router_path, train_router
from playground.handoff.self_handoff import parse_handoff_call, template_offers_tools
from playground.runtime import local_engine
from playground.settings import Settings
from tests.conftest import MODEL_CACHE
from tests.factories import turn_record
from tests.handoff_helpers import event_with_participant

MESSAGES = [{"role": "user", "content": "Hi"}]


def test_never_and_always_are_the_two_ends_of_the_curve() -> None:
    assert decide(NeverPolicy(), 0.0001, PolicyInput(MESSAGES)).handoff is False
    assert decide(AlwaysPolicy(), 1.0, PolicyInput(MESSAGES)).handoff is True


def test_confidence_score_grows_as_the_draft_gets_less_certain() -> None:
    sure = PolicyInput(MESSAGES, "Paris.", [-0.01, -0.02, -0.05], [0.1, 0.2, 0.1])
    unsure = PolicyInput(MESSAGES, "Maybe…", [-0.5, -4.0, -7.0], [2.5, 4.0, 5.5])
    low, high = decide(ConfidencePolicy(), 0.5, sure), decide(ConfidencePolicy(), 0.5, unsure)
    assert 0 <= low.score < high.score <= 1
    assert not low.handoff and high.handoff and "p10 log-prob" in high.reason
    assert high.signals["scores"] == {"confidence": high.score}
    assert high.signals["min_logprob"] == -7.0 and high.signals["max_entropy"] == 5.5


def test_decision_is_score_at_or_above_threshold_kept_apart_from_the_score() -> None:
    data = PolicyInput(MESSAGES, "x", [-1.0, -2.0], [1.0, 2.0])
    score = decide(ConfidencePolicy(), 0.5, data).score
    assert decide(ConfidencePolicy(), score, data).handoff
    assert not decide(ConfidencePolicy(), score + 1e-9, data).handoff


def test_running_max_keeps_an_early_decision_reproducible_from_the_stored_score() -> None:
    data = PolicyInput(MESSAGES, "x", [-0.01, -0.01], [0.1, 0.1])
    decision = decide(ConfidencePolicy(), 0.6, data, running_max=0.7)
    assert decision.score == 0.7 and decision.handoff and decision.signals["final_score"] < 0.6


def test_unknown_policy_names_the_choices() -> None:
    with pytest.raises(UnknownPolicy, match="choose one of: never, always, confidence, self, router"):
        get_policy("coin-flip")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('commentary to=functions.handoff_to_cloud json{"reason": "needs current prices"}', "needs current prices"),
        ('<tool_call>{"name": "handoff_to_cloud", "arguments": {"reason": "hard math"}}</tool_call>', "hard math"),
        ('{"name": "handoff_to_cloud", "arguments": {}}', ""),
        ("The capital of France is Paris.", None),
        ("I could hand off to the cloud but I won't.", None),
        ('You could call the "handoff_to_cloud" tool, {"reason": "but I will not"}.', None),
        ('A call looks like {"name": "handoff_to_cloud", "arguments": {"reason": "x"}} in JSON.', None),
    ],
)
def test_self_handoff_call_is_parsed_from_harmony_and_json_tool_calls(text: str, reason: str | None) -> None:
    assert parse_handoff_call(text) == reason


@pytest.mark.slow
def test_self_policy_refuses_to_start_on_a_model_without_tool_calls(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(model_cache_dir=MODEL_CACHE)
    engine = local_engine(settings)
    assert not template_offers_tools(engine.tokenizer)
    with pytest.raises(PolicyUnavailable, match="template ignores tools.*gpt-oss"):
        get_policy("self", settings, engine)
    with caplog.at_level(logging.WARNING):
        policy, note = resolve_policy("self", settings, engine)
    assert policy.name == settings.handoff_fallback_policy == "confidence"
    assert "Falling back to the 'confidence' policy" in note and note in caplog.text


@pytest.mark.slow
def test_a_template_that_renders_tools_is_detected() -> None:
    tokenizer = local_engine(Settings(model_cache_dir=MODEL_CACHE)).tokenizer
    template = "{% for t in tools %}{{ t.function.name }}{% endfor %}{% for m in messages %}{{ m.content }}{% endfor %}"
    assert template_offers_tools(_with_template(tokenizer, template))


def _with_template(tokenizer, template: str):  # noqa: ANN001, ANN202
    import copy

    clone = copy.copy(tokenizer)
    clone.chat_template = template
    return clone


def _vote(url: str, participant_id: int, prompt: str, winner_arm: str) -> None:
    """A stored turn with a vote on it, written through the same capture functions as the app."""
    from db.models import Conversation, Turn
    from tests.handoff_helpers import Finished, store

    record = turn_record(prompt, score=0.7, language=None)
    turn_id = store(url, participant_id, Finished(record, "local answer", "cloud answer"))
    with session_scope(url) as session:
        conversation = session.get(Conversation, session.get(Turn, turn_id).conversation_id)
        side, conversation_id = conversation.handoff_side, conversation.id
    winner = winner_pane(winner_arm, side)
    with session_scope(url) as session:
        submit_vote(session, VoteSubmission(f"k-{turn_id}", conversation_id, winner))


HARD = [
    "Prove that there are infinitely many primes.",
    "Write a SQL query with window functions for running totals.",
    "Derive the gradient of softmax cross-entropy.",
    "Explain the CAP theorem with examples.",
]
EASY = ["Say hi.", "What is 2 + 2?", "Name a color.", "Thanks!"]


@pytest.mark.slow
def test_router_is_untrained_until_trained_from_votes_then_scores_prompts(db_url: str, tmp_path) -> None:
    settings = Settings(model_cache_dir=tmp_path / "models", database_url=db_url)
    with pytest.raises(PolicyUnavailable, match="untrained.*handoff router train"):
        get_policy("router", settings)
    policy, note = resolve_policy("router", settings)
    assert policy.name == "confidence" and "untrained" in note

    _, participant = event_with_participant(db_url)
    with pytest.raises(RouterNotTrainable, match="needs at least 2 votes"):
        train_router(db_url, settings)
    for prompt in HARD:
        _vote(db_url, participant, prompt, "on")
    for prompt in EASY:
        _vote(db_url, participant, prompt, "off")
    _vote(db_url, participant, "Both answers were wrong", "both_bad")  # says nothing: left out

    model = train_router(db_url, settings)
    assert model.examples == 8 and model.positives == 4 and router_path(settings).exists()
    router = get_policy("router", settings)
    assert isinstance(router, RouterPolicy) and router.version == model.version and router.stage == "pre"
    hard = decide(
        router, 0.5, PolicyInput([{"role": "user", "content": "Prove that the square root of 2 is irrational."}])
    )
    easy = decide(router, 0.5, PolicyInput([{"role": "user", "content": "Say hello."}]))
    assert hard.score > easy.score and hard.signals["scores"]["router"] == hard.score


@pytest.mark.slow
def test_router_train_command_reports_and_refuses_clearly(
    app_env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from playground.cli import app
    from playground.settings import get_settings

    monkeypatch.setenv("HANDOFF_MODEL_CACHE_DIR", str(tmp_path / "models"))  # never touch the shared cache
    get_settings.cache_clear()

    result = CliRunner().invoke(app, ["router", "train"])
    assert result.exit_code == 1 and "needs at least 2 votes" in result.output
    _, participant = event_with_participant(app_env.resolved_database_url)
    for prompt in HARD[:2]:
        _vote(app_env.resolved_database_url, participant, prompt, "on")
    for prompt in EASY[:2]:
        _vote(app_env.resolved_database_url, participant, prompt, "tie")
    result = CliRunner().invoke(app, ["router", "train"])
    assert result.exit_code == 0, result.output
    assert "trained on 4 voted prompts (2 where handoff won)" in result.output
    assert (tmp_path / "models" / "router" / "router.json").exists()
