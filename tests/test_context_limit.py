"""Prompts and whole conversations are bounded in tokens against the model's context, not in characters."""

from __future__ import annotations

import pytest

from feedback.errors import FeedbackRejected
from playground.attendee_session import BlindComparison, check_context
from playground.i18n import Translator
from playground.runtime import context_window
from playground.settings import Settings
from playground.turn_runner import ShownTurn
from tests.conftest import MODEL_CACHE

SETTINGS = Settings(model_cache_dir=MODEL_CACHE, max_new_tokens=256)


def _turn(prompt: str, off: str, on: str) -> ShownTurn:
    return ShownTurn(1, prompt, {"off": off, "on": on}, {"off": [], "on": []}, [], True, None, None, {})


def test_the_bundled_model_reads_8192_tokens_and_emoji_cost_several_each() -> None:
    window = context_window(SETTINGS)
    assert window.context_tokens == 8192
    assert window.count([{"role": "user", "content": "🎉" * 8000}]) > 3 * 8000 * 0.9


def test_an_emoji_prompt_inside_the_character_limit_is_refused_with_its_token_count() -> None:
    with pytest.raises(FeedbackRejected) as refused:
        check_context(SETTINGS, BlindComparison(), "🎉" * 8000)
    assert refused.value.key == "errors.prompt_too_many_tokens"
    assert refused.value.params["max_tokens"] == 8192 - 256 and refused.value.params["tokens"] > 20_000
    assert "Shorten it" in Translator("en").error(refused.value)
    check_context(SETTINGS, BlindComparison(), "Hello " * 1000)  # long in characters, fine in tokens


def test_a_conversation_that_outgrows_the_context_asks_for_a_new_comparison() -> None:
    comparison = BlindComparison()
    comparison.add_turn(_turn("Tell me a story.", "short", "word " * 7800))  # only the handoff arm is long
    check_context(SETTINGS, BlindComparison(), "And then?")
    with pytest.raises(FeedbackRejected) as refused:
        check_context(SETTINGS, comparison, "And then? " * 100)
    assert refused.value.key == "errors.conversation_too_long"
    assert "Start a new comparison" in Translator("en").error(refused.value)
