"""Most-popular baseline: every user gets the same item scores, the item's interaction count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.base import InteractionData, Recommender


class Popularity(Recommender):
    """Scores item ``i`` by how many users interacted with it (``binarize=True``) or by its total weight.

    The floor every personalised model must beat, and a safe fallback for cold-start users.
    """

    name = "popularity"

    def __init__(self, binarize: bool = True) -> None:
        super().__init__(binarize=binarize)
        self.binarize = binarize
        self.item_scores_: np.ndarray | None = None

    def fit(self, data: InteractionData) -> Popularity:
        matrix = data.matrix
        counts = (matrix > 0).sum(axis=0) if self.binarize else matrix.sum(axis=0)
        self.item_scores_ = np.asarray(counts, dtype=np.float32).ravel()
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if self.item_scores_ is None:
            raise RuntimeError("Popularity.score called before fit")
        return np.broadcast_to(self.item_scores_, (len(np.asarray(user_idx)), len(self.item_scores_))).copy()

    def _save_state(self, path: Path) -> None:
        np.save(path / "item_scores.npy", self.item_scores_)

    def _load_state(self, path: Path) -> None:
        self.item_scores_ = np.load(path / "item_scores.npy")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"binarize": trial.suggest_categorical("binarize", [True, False])}
