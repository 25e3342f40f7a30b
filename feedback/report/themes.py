"""Comment themes and prompt clusters on the bundled sentence embeddings (all-MiniLM-L6-v2), k-means
per language, each labelled by its most representative text (the one nearest the centre).

Prompts are clustered within their stored language, so a cluster never mixes languages; redaction
markers (``[PHONE]``, ``[EMAIL]`` …) are removed before embedding, so they never make a theme.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from feedback.embeddings import Embed

MARKER = re.compile(r"\[[A-Z][A-Z_]*\]")
LABEL_CHARS = 80


def without_markers(text: str) -> str:
    """Text with redaction markers removed and spaces collapsed."""
    return re.sub(r"\s+", " ", MARKER.sub(" ", text)).strip()


def _label(text: str) -> str:
    text = without_markers(text)
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _cluster(texts: Sequence[str], k: int, embed: Embed, seed: int = 0) -> list[np.ndarray]:
    """Member indices per cluster, each ordered from the most representative (nearest the centre) out."""
    cleaned = [without_markers(t) for t in texts]
    keep = np.flatnonzero([bool(t) for t in cleaned])
    distinct = sorted({cleaned[i] for i in keep})
    if not distinct:
        return []
    vectors = embed(distinct)
    index = {t: i for i, t in enumerate(distinct)}
    rows = vectors[[index[cleaned[i]] for i in keep]]
    k = max(1, min(k, len(distinct)))
    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(rows)
    distances = model.transform(rows)
    clusters = []
    for c in range(k):
        members = np.flatnonzero(model.labels_ == c)
        if members.size:
            clusters.append(keep[members[np.argsort(distances[members, c], kind="stable")]])
    return clusters


def _examples(texts: Sequence[str], members: np.ndarray, n: int) -> list[str]:
    out: list[str] = []
    for i in members:
        label = _label(texts[i])
        if label and label not in out:
            out.append(label)
        if len(out) == n:
            break
    return out


def comment_themes(comments: list[str], embed: Embed | None, k: int = 5, per_theme: int = 2) -> list[dict[str, Any]]:
    """Themes of (already redacted) comments, biggest first, labelled by the most representative comment."""
    if embed is None or len(set(comments)) < 2:
        return []
    themes = []
    for members in _cluster(comments, k, embed):
        examples = _examples(comments, members, per_theme)
        themes.append({"label": examples[0], "comments": int(members.size), "examples": examples})
    return sorted(themes, key=lambda t: -t["comments"])


def prompt_clusters(
    prompts: list[str], handoff_won: list[bool], languages: list[str | None], embed: Embed | None, k: int = 8
) -> list[dict[str, Any]]:
    """Clusters of (redacted) decided prompts per language with the handoff arm's win rate in each,
    worst for the local model first; ``k`` clusters in all, shared out by each language's size."""
    if embed is None or not prompts:
        return []
    won = np.asarray(handoff_won, dtype=bool)
    language = np.asarray([lang or "unknown" for lang in languages], dtype=object)
    clusters = []
    for lang in sorted(set(language)):
        positions = np.flatnonzero(language == lang)
        share = max(1, round(k * positions.size / len(prompts)))
        texts = [prompts[i] for i in positions]
        for members in _cluster(texts, share, embed):
            examples = _examples(texts, members, 3)
            clusters.append(
                {
                    "label": examples[0] if examples else "",
                    "language": str(lang),
                    "examples": examples,
                    "decided": int(members.size),
                    "handoff_on_win_rate": float(won[positions[members]].mean()),
                }
            )
    return sorted(clusters, key=lambda c: -c["handoff_on_win_rate"])
