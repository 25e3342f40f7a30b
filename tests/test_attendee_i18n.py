"""The interface-language catalog: complete in every shipped language, and every key a page asks for exists."""

from __future__ import annotations

import ast

import pytest

from feedback import capture, votes
from feedback.errors import TurnLimitReached
from playground.comparison import BUDGET_NOTE, HANDOFF_NOTE, RATE_NOTE, THINKING_NOTE, cloud_failed_note
from playground.i18n import LANGUAGES, Translator, catalog, placeholders, supported, translate
from tests.conftest import ROOT


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


CODE_ROOTS = [ROOT / "playground", ROOT / "feedback", ROOT / "db"]


def _keys_used_in_code() -> set[str]:
    """Every message key the code names, in every module of every layer.

    Asked for: ``t("…")`` and ``Translator(…)("…")``, ``translate(language, "…")``, pane notes
    (``Note("…")``). Raised: ``FeedbackRejected("x")`` and its subclasses' ``super().__init__("x")``
    are ``errors.x``; an error class's ``key = "…"`` is that key. A key built with an f-string is
    checked by its constant prefix (``"categories.*"``).
    """
    trees = [ast.parse(path.read_text()) for root in CODE_ROOTS for path in sorted(root.rglob("*.py"))]
    classes = [node for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    rejected = {"FeedbackRejected"}
    while grown := {
        c.name for c in classes if c.name not in rejected and any(getattr(b, "id", None) in rejected for b in c.bases)
    }:
        rejected |= grown
    keys: set[str] = set()

    def add(node: ast.expr, prefix: str = "") -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            keys.add(prefix + node.value)
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            keys.add(prefix + node.values[0].value + "*")

    def name_of(func: ast.expr) -> str | None:
        return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None

    for cls in classes:
        for statement in cls.body:
            if isinstance(statement, ast.Assign) and any(getattr(t, "id", None) == "key" for t in statement.targets):
                add(statement.value)
        if cls.name in rejected:
            for node in ast.walk(cls):
                if isinstance(node, ast.Call) and name_of(node.func) == "__init__" and node.args:
                    add(node.args[0], "errors.")
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = name_of(node.func)
            if name in ("t", "Note") or (isinstance(node.func, ast.Call) and name_of(node.func.func) == "Translator"):
                add(node.args[0])
            elif name == "translate" and len(node.args) > 1:
                add(node.args[1])
            elif name == "FeedbackRejected":
                add(node.args[0], "errors.")
    keys.discard("errors.errors.*")  # FeedbackRejected's own f"errors.{key}"
    return keys


def test_every_message_key_the_code_asks_for_or_raises_exists_in_every_language() -> None:
    keys = _keys_used_in_code()
    assert len(keys) > 80
    # the families this test exists for: pages, pane notes, errors from every layer
    assert {"reveal.notes", "note.handing_off", "note.cloud_failed", "errors.empty_prompt"} <= keys
    assert {"errors.database_unavailable", "errors.prompt_too_many_tokens", "errors.vote_final"} <= keys
    for language in LANGUAGES:
        messages = catalog(language)
        for key in keys:
            if key.endswith("*"):
                assert any(name.startswith(key[:-1]) for name in messages), (language, key)
            else:
                assert key in messages, (language, key)
    assert Translator("fr").error(TurnLimitReached(3)).startswith("Cette comparaison a atteint ses 3 tours")


def test_pane_notes_are_translated() -> None:
    """What a Japanese or French attendee reads at the reveal is not English."""
    for note in (THINKING_NOTE, HANDOFF_NOTE, BUDGET_NOTE, RATE_NOTE, cloud_failed_note("timeout")):
        english = translate("en", note.key, **note.params)
        for language in ("ja", "fr"):
            assert translate(language, note.key, **note.params) != english, (language, note.key)
    assert "timeout" in translate("ja", "note.cloud_failed", kind="timeout")


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
