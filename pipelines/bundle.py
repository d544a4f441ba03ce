"""A deployable recommender: the model plus the id maps, seen items and popularity it answers with.

This is what the MLflow pyfunc wraps and what promotion reads; it needs only numpy/scipy and ``models``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from models.base import InteractionData, Recommender


@dataclass
class Bundle:
    model: Recommender
    user_ids: np.ndarray
    item_ids: np.ndarray
    seen: sp.csr_matrix  # items each known user interacted with in training
    popularity: np.ndarray  # interaction count per item (cold-start fallback)
    repeats: bool  # whether already-seen items may be recommended again (e.g. groceries)

    @classmethod
    def from_training(
        cls, model: Recommender, data: InteractionData, repeats: bool, seen: sp.csr_matrix | None = None
    ) -> Bundle:
        """``seen`` defaults to the training interactions; pass all known ones so serving never repeats them."""
        popularity = np.asarray(data.matrix.sum(axis=0)).ravel()
        seen = data.matrix if seen is None else seen
        return cls(model, data.user_ids, data.item_ids, seen.tocsr(), popularity, repeats)

    def save(self, path: Path) -> None:
        path = Path(path)
        self.model.save(path / "model")
        np.savez_compressed(
            path / "index.npz",
            user_ids=self.user_ids.astype(str),
            item_ids=self.item_ids.astype(str),
            popularity=self.popularity,
            repeats=np.array(self.repeats),
        )
        sp.save_npz(path / "seen.npz", self.seen)

    @classmethod
    def load(cls, path: Path) -> Bundle:
        path = Path(path)
        index = np.load(path / "index.npz")
        return cls(
            model=Recommender.load(path / "model"),
            user_ids=index["user_ids"].astype(object),
            item_ids=index["item_ids"].astype(object),
            seen=sp.load_npz(path / "seen.npz").tocsr(),
            popularity=index["popularity"],
            repeats=bool(index["repeats"]),
        )

    def popular(self, k: int) -> list[tuple[str, float]]:
        top = np.argsort(-self.popularity, kind="stable")[:k]
        return [(str(self.item_ids[i]), float(self.popularity[i])) for i in top]

    def recommend_known(self, k: int, batch_size: int = 512) -> dict[str, list[tuple[str, float]]]:
        """Top-k for every known user (what promotion writes to the serving store)."""
        users = np.arange(len(self.user_ids))
        items, scores = self.model.recommend(
            users, k, exclude=None if self.repeats else self.seen, batch_size=batch_size
        )
        return {str(self.user_ids[u]): self._ranked(items[u], scores[u]) for u in users}

    def recommend(self, user_id: str, k: int) -> tuple[list[tuple[str, float]], bool]:
        """Top-k for one user id and whether it was a cold start (unknown user -> popularity)."""
        position = np.flatnonzero(self.user_ids == str(user_id))
        if len(position) == 0:
            return self.popular(k), True
        items, scores = self.model.recommend(position, k, exclude=None if self.repeats else self.seen)
        return self._ranked(items[0], scores[0]), False

    def _ranked(self, items: np.ndarray, scores: np.ndarray) -> list[tuple[str, float]]:
        """(item id, score) pairs of one user's top-k, without masked (-inf) and empty (-1) slots."""
        return [
            (str(self.item_ids[i]), float(s))
            for i, s in zip(items, scores, strict=True)
            if i >= 0 and np.isfinite(s)
        ]
