"""The one small protocol every recommender honours.

Models are pure: plain arrays and sparse matrices in, scores out. No orchestration, MLflow or Feast here —
side features arrive as dense matrices aligned to the user/item index.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp


@dataclass
class InteractionData:
    """A user x item interaction matrix with its id maps and optional side features.

    ``matrix[u, i]`` is the implicit-feedback weight (count of interactions, or 1). Rows of
    ``user_features``/``item_features`` are aligned with ``user_ids``/``item_ids``.
    ``item_text`` holds one document per item (title, category, brand, ... joined by spaces) for content
    models; ``history`` holds each user's item indices in time order (repeats kept) for sequential models.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_features: np.ndarray | None = None
    item_features: np.ndarray | None = None
    item_text: list[str] | None = None
    history: list[np.ndarray] | None = None

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]


def top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best-first top-k item indices and scores of each row of ``scores``; ``exclude`` (same shape) masks
    items to -inf. Slots beyond the catalogue size stay empty: item -1, score -inf."""
    scores = np.asarray(scores, dtype=np.float64).copy()
    if exclude is not None:
        rows, cols = exclude.nonzero()
        scores[rows, cols] = -np.inf
    items = np.full((scores.shape[0], k), -1, dtype=np.int64)
    best = np.full((scores.shape[0], k), -np.inf, dtype=np.float64)
    kk = min(k, scores.shape[1])
    top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    items[:, :kk] = np.take_along_axis(top, order, axis=1)
    best[:, :kk] = np.take_along_axis(top_scores, order, axis=1)
    return items, best


class Recommender:
    """Base class: subclasses implement ``fit``, ``score`` and the ``_save_state``/``_load_state`` pair.

    ``name`` is the registry key; ``params`` are the constructor keyword arguments (hyper-parameters),
    saved beside the state so ``load`` can rebuild the object.
    """

    name: ClassVar[str] = "base"

    def __init__(self, **params: Any) -> None:
        self.params = params
        # Set by a trainer (e.g. for Optuna pruning); iterative models call ``report_epoch`` after each epoch.
        self.epoch_callback: Callable[[int], None] | None = None

    def report_epoch(self, epoch: int) -> None:
        """Tell the trainer that epoch ``epoch`` (0-based) is done; ``score`` must work at this point.

        The callback may raise (Optuna's ``TrialPruned``) to stop a hopeless fit early."""
        if self.epoch_callback is not None:
            self.epoch_callback(epoch)

    # --- to implement -------------------------------------------------------------------------------
    def fit(self, data: InteractionData) -> Recommender:
        raise NotImplementedError

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores of every item for the given user indices: shape (len(user_idx), n_items)."""
        raise NotImplementedError

    def _save_state(self, path: Path) -> None:
        raise NotImplementedError

    def _load_state(self, path: Path) -> None:
        raise NotImplementedError

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna search space: returns constructor kwargs suggested by ``trial``."""
        return {}

    # --- shared -------------------------------------------------------------------------------------
    def recommend(
        self, user_idx: np.ndarray, k: int, exclude: sp.csr_matrix | None = None, batch_size: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores per user, best first; ``exclude`` rows mask already-seen items.

        Masked items score -inf; callers drop those (and -1 slots when k exceeds the catalogue)."""
        user_idx = np.asarray(user_idx)
        all_items = np.empty((len(user_idx), k), dtype=np.int64)
        all_scores = np.empty((len(user_idx), k), dtype=np.float64)
        for start in range(0, len(user_idx), batch_size):
            batch = user_idx[start : start + batch_size]
            mask = None if exclude is None else exclude[batch]
            rows = slice(start, start + len(batch))
            all_items[rows], all_scores[rows] = top_k(self.score(batch), k, mask)
        return all_items, all_scores

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "recommender.json").write_text(json.dumps({"name": self.name, "params": self.params}))
        self._save_state(path)

    @classmethod
    def load(cls, path: Path) -> Recommender:
        """Rebuild a saved recommender of any registered kind from its folder."""
        from models.registry import get_model_class

        meta = json.loads((Path(path) / "recommender.json").read_text())
        model = get_model_class(meta["name"])(**meta["params"])
        model._load_state(Path(path))
        return model
