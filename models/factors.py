"""What every plain matrix-factorisation model shares once fitted: ``score = users @ items.T`` and its two
factor matrices saved as numpy files (so scoring, saving and loading need neither the fitting library nor
Spark)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.base import Recommender


class FactorModel(Recommender):
    """A recommender whose fit leaves ``user_factors_`` (n_users × f) and ``item_factors_`` (n_items × f)."""

    user_factors_: np.ndarray | None
    item_factors_: np.ndarray | None

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if self.user_factors_ is None or self.item_factors_ is None:
            raise RuntimeError(f"{type(self).__name__}.score called before fit")
        return self.user_factors_[np.asarray(user_idx)] @ self.item_factors_.T

    def _save_state(self, path: Path) -> None:
        np.save(path / "user_factors.npy", self.user_factors_)
        np.save(path / "item_factors.npy", self.item_factors_)

    def _load_state(self, path: Path) -> None:
        self.user_factors_ = np.load(path / "user_factors.npy")
        self.item_factors_ = np.load(path / "item_factors.npy")
