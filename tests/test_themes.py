"""Prompt clusters and comment themes on the bundled sentence encoder (loads it: slow)."""

from __future__ import annotations

import pytest

from feedback.embeddings import embed
from feedback.report.themes import comment_themes, prompt_clusters, without_markers


def test_redaction_markers_are_not_words() -> None:
    assert without_markers("Call me on [PHONE] or [EMAIL]  today") == "Call me on or today"


@pytest.mark.slow
def test_clusters_stay_within_one_language_and_group_by_meaning() -> None:
    math = ["What is 17 times 23?", "Compute the derivative of x squared.", "Solve 2x + 3 = 11 for x."]
    cooking = ["How do I bake sourdough bread?", "Give me a recipe for tomato soup.", "How long to boil an egg?"]
    french = ["Explique la différence entre une liste et un tuple en Python.", "Écris un haïku sur la mer."]
    chinese = ["请解释什么是递归，并举一个例子。", "用三句话总结一下相对论。"]
    prompts = math + cooking + french + chinese
    languages = ["en"] * 6 + ["fr"] * 2 + ["zh-cn"] * 2
    won = [True] * 3 + [False] * 3 + [True, False, True, True]
    clusters = prompt_clusters(prompts, won, languages, embed, k=3)  # English gets two
    for cluster in clusters:
        members = {p for p, lang in zip(prompts, languages, strict=True) if lang == cluster["language"]}
        assert set(cluster["examples"]) <= members  # never a mixed-language cluster
    english = {frozenset(c["examples"]) for c in clusters if c["language"] == "en"}
    assert frozenset(math) in english and frozenset(cooking) in english
    assert next(c for c in clusters if frozenset(c["examples"]) == frozenset(math))["handoff_on_win_rate"] == 1.0


@pytest.mark.slow
def test_comment_themes_ignore_markers_and_are_labelled_by_a_representative_comment() -> None:
    comments = [
        "My number is [PHONE], call me.",
        "Reach me at [PHONE] tomorrow.",
        "Way too long, I only needed one line.",
        "Too verbose, it repeats the question.",
        "The code does not run: missing import.",
        "The code example failed with a syntax error.",
    ]
    themes = comment_themes(comments, embed, k=3)
    assert sum(t["comments"] for t in themes) == len(comments)
    for theme in themes:
        assert "[" not in theme["label"] and theme["label"] in {without_markers(c) for c in comments}
