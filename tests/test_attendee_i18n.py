"""The interface-language catalog: complete in every shipped language, and every key a page asks for exists."""

from __future__ import annotations

import ast
import re

import pytest

from feedback import capture, votes
from feedback.errors import TurnLimitReached
from playground.i18n import LANGUAGES, Translator, catalog, placeholders, supported, translate
from tests.conftest import ROOT

PAGE_SOURCES = [ROOT / "playground" / "views" / "attendee.py", ROOT / "playground" / "attendee_session.py"]


@pytest.mark.parametrize("language", [name for name in LANGUAGES if name != "en"])
def test_every_language_has_every_message_with_the_same_placeholders(language: str) -> None:
    english, other = catalog("en"), catalog(language)
    assert set(other) == set(english)
    for key, message in english.items():
        if isinstance(message, str):
            assert placeholders(other[key]) == placeholders(message), key
            assert other[key].strip(), key
        else:
            assert len(other[key]) == len(message), key


def _keys_used_by_pages() -> set[str]:
    """Literal ``t("…")`` keys in the page and its services; f-string keys are checked by their prefix."""
    keys = set()
    for path in PAGE_SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "t" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant):
                    keys.add(first.value)
                elif isinstance(first, ast.JoinedStr) and isinstance(first.values[0], ast.Constant):
                    keys.add(first.values[0].value + "*")
    return keys


def test_every_key_the_page_asks_for_exists() -> None:
    english = catalog("en")
    used = _keys_used_by_pages()
    assert len(used) > 40
    for key in used:
        if key.endswith("*"):
            assert any(name.startswith(key[:-1]) for name in english), key
        else:
            assert key in english, key


def test_every_error_a_person_can_cause_has_a_message() -> None:
    source = "".join(path.read_text() for path in (ROOT / "feedback").rglob("*.py"))
    keys = set(re.findall(r'FeedbackRejected\("(\w+)"', source)) | set(
        re.findall(r'super\(\).__init__\("(\w+)"', source)
    )
    assert {"empty_prompt", "vote_final", "bad_winner"} <= keys
    for key in keys:
        for language in LANGUAGES:
            assert f"errors.{key}" in catalog(language), (language, key)
    assert Translator("fr").error(TurnLimitReached(3)).startswith("Cette comparaison a atteint ses 3 tours")


def test_categories_have_samples_and_profile_choices_have_labels() -> None:
    for language in LANGUAGES:
        t = Translator(language)
        for category in ("coding", "reasoning", "math", "writing", "extraction", "stem", "humanities", "roleplay"):
            assert t(f"categories.{category}") and len(t.list(f"samples.{category}")) >= 2
        sections = {"role": "roles", "experience": "experience", "language": "languages"}
        for name, choices in capture.PROFILE_CHOICES.items():
            for choice in choices:
                assert t(f"{sections[name]}.{choice}")
        for tag in votes.DEFAULT_LIKE_TAGS + votes.DEFAULT_DISLIKE_TAGS:
            assert t.label("tags", tag) != tag


def test_unknown_languages_fall_back_to_english_and_organizer_tags_show_as_written() -> None:
    assert supported("ja-JP") == "ja" and supported("de") == "en" and supported(None) == "en"
    assert translate("de", "feedback.save") == "Save feedback"
    assert Translator("fr").label("tags", "hallucinated-api") == "hallucinated-api"
