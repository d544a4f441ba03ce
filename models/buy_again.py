""" "Buy again": each user's own most frequently bought items first (the next-basket baseline to beat)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.base import InteractionData, Recommender


class BuyAgain(Recommender):
    """Scores = the user's own interaction count per item, plus a small share of item popularity so that
    items the user never bought are ordered by popularity after all of the user's own items."""

    name = "buy_again"

    def __init__(self, popularity_weight: float = 1e-3) -> None:
        super().__init__(popularity_weight=popularity_weight)
        self.popularity_weight = popularity_weight
        self.counts_: sp.csr_matrix | None = None
        self.popularity_: np.ndarray | None = None

    def fit(self, data: InteractionData) -> BuyAgain:
        self.counts_ = data.matrix.tocsr().astype(np.float32)
        popularity = np.asarray((data.matrix > 0).sum(axis=0), dtype=np.float32).ravel()
        # scaled into [0, popularity_weight]: never outranks a single own purchase (count >= 1)
        self.popularity_ = popularity / max(popularity.max(), 1.0) * self.popularity_weight
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if self.counts_ is None or self.popularity_ is None:
            raise RuntimeError("BuyAgain.score called before fit")
        own = self.counts_[np.asarray(user_idx)].toarray()
        return own + self.popularity_

    def _save_state(self, path: Path) -> None:
        sp.save_npz(path / "counts.npz", self.counts_)
        np.save(path / "popularity.npy", self.popularity_)

    def _load_state(self, path: Path) -> None:
        self.counts_ = sp.load_npz(path / "counts.npz").tocsr()
        self.popularity_ = np.load(path / "popularity.npy")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"popularity_weight": trial.suggest_float("popularity_weight", 1e-4, 0.5, log=True)}
