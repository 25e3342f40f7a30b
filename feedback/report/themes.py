"""Comment themes and prompt clusters: TF-IDF + k-means (scikit-learn), labelled by top terms."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer


def _cluster(texts: list[str], k: int, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray, Any] | None:
    unique = len(set(texts))
    if unique < 2:
        return None
    k = max(1, min(k, unique))
    vectorizer = TfidfVectorizer(stop_words="english", max_features=5000, ngram_range=(1, 2), min_df=1)
    try:
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # only stop words
        return None
    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(matrix)
    terms = np.asarray(vectorizer.get_feature_names_out())
    labels = [", ".join(terms[np.argsort(center)[::-1][:3]]) for center in model.cluster_centers_]
    distances = model.transform(matrix)
    return model.labels_, labels, distances, matrix


def comment_themes(comments: list[str], k: int = 5, per_theme: int = 2) -> list[dict[str, Any]]:
    """Themes of (already redacted) comments, biggest first, with the most representative comments."""
    result = _cluster(comments, k)
    if result is None:
        return []
    assignment, labels, distances, _ = result
    themes = []
    for cluster, label in enumerate(labels):
        members = np.flatnonzero(assignment == cluster)
        if members.size == 0:
            continue
        order = members[np.argsort(distances[members, cluster])]
        examples: list[str] = []
        for i in order:
            if comments[i] not in examples:
                examples.append(comments[i])
            if len(examples) == per_theme:
                break
        themes.append({"label": label, "comments": int(members.size), "examples": examples})
    return sorted(themes, key=lambda t: -t["comments"])


def prompt_clusters(prompts: list[str], handoff_won: list[bool], k: int = 8) -> list[dict[str, Any]]:
    """Clusters of decided prompts with the handoff arm's win rate in each, worst for the local model first."""
    result = _cluster(prompts, k)
    if result is None:
        return []
    assignment, labels, _, _ = result
    won = np.asarray(handoff_won, dtype=bool)
    clusters = []
    for cluster, label in enumerate(labels):
        members = assignment == cluster
        n = int(members.sum())
        if n:
            rate = round(float(won[members].mean()), 4)
            clusters.append({"label": label, "decided": n, "handoff_on_win_rate": rate})
    return sorted(clusters, key=lambda c: -c["handoff_on_win_rate"])
