"""Reciprocal-rank fusion (Cormack et al., SIGIR 2009) of several fitted recommenders.

``score(u, i) = sum_m w_m / (c + rank_m(u, i))`` over each component's top-``depth`` list (ranks from 1);
items outside every list get 0 plus a tiny tie-break by the mean normalised score. Ranks ignore the
scale of each model's scores, which is what makes RRF robust where score blending needs normalisation.
When ``seen`` is given, those items are ranked last in every component (the caller masks them anyway),
so they do not push the unseen items down the lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.base import InteractionData, Recommender, top_k
from models.blend import normalize_scores

TIE_BREAK = 1e-6  # weight of the mean normalised score: orders items no list ranked, never reorders ranks


def masked(scores: np.ndarray, seen: sp.csr_matrix | None, user_idx: np.ndarray) -> np.ndarray:
    """``scores`` with the users' ``seen`` items set to -inf (a copy; ``scores`` is left alone)."""
    scores = np.array(scores, dtype=np.float32)
    if seen is not None:
        rows, cols = seen[np.asarray(user_idx)].nonzero()
        scores[rows, cols] = -np.inf
    return scores


def component_ranks(scores: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``depth`` item indices per row (best first) and a dense rank matrix: 1..depth, 0 = not ranked."""
    items, best = top_k(scores, depth)
    ranks = np.zeros(scores.shape, dtype=np.int32)
    rows = np.repeat(np.arange(scores.shape[0]), items.shape[1]).reshape(items.shape)
    keep = (items >= 0) & np.isfinite(best)
    ranks[rows[keep], items[keep]] = (np.nonzero(keep)[1] + 1).astype(np.int32)
    return items, ranks


class ReciprocalRankFusion(Recommender):
    """RRF over named components; ``weights`` scale each component's reciprocal ranks."""

    name = "rrf"

    def __init__(
        self, components: list[str], weights: list[float] | None = None, c: float = 60.0, depth: int = 100
    ) -> None:
        weights = [1.0] * len(components) if weights is None else [float(w) for w in weights]
        if len(weights) != len(components):
            raise ValueError(f"rrf: {len(components)} components but {len(weights)} weights")
        if c < 0 or depth < 1:
            raise ValueError(f"rrf: need c >= 0 and depth >= 1 (got c={c}, depth={depth})")
        super().__init__(components=list(components), weights=weights, c=float(c), depth=int(depth))
        self.components = list(components)
        self.weights = weights
        self.c = float(c)
        self.depth = int(depth)
        self.models: dict[str, Recommender] = {}
        self.seen_: sp.csr_matrix | None = None

    @classmethod
    def from_models(
        cls, models: dict[str, Recommender], seen: sp.csr_matrix | None = None, **params: Any
    ) -> ReciprocalRankFusion:
        """RRF of already-fitted components; ``seen`` (users x items) are ranked last in every list."""
        fusion = cls(components=list(models), **params)
        fusion.models = dict(models)
        fusion.seen_ = None if seen is None else sp.csr_matrix(seen, dtype=np.float32)
        return fusion

    def fit(self, data: InteractionData) -> ReciprocalRankFusion:
        raise TypeError("rrf fuses fitted models: build it with ReciprocalRankFusion.from_models")

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if not self.models:
            raise RuntimeError("ReciprocalRankFusion.score called before its components were set")
        user_idx = np.asarray(user_idx)
        total: np.ndarray | None = None
        tie_break: np.ndarray | None = None
        for name, weight in zip(self.components, self.weights, strict=True):
            raw = self.models[name].score(user_idx)
            _, ranks = component_ranks(masked(raw, self.seen_, user_idx), self.depth)
            part = np.divide(
                weight, self.c + ranks, out=np.zeros(ranks.shape, dtype=np.float32), where=ranks > 0
            )
            norm = normalize_scores(raw) / len(self.components)
            total = part if total is None else total + part
            tie_break = norm if tie_break is None else tie_break + norm
        return total + TIE_BREAK * tie_break

    def _save_state(self, path: Path) -> None:
        for name in self.components:
            self.models[name].save(path / "components" / name)
        if self.seen_ is not None:
            sp.save_npz(path / "seen.npz", self.seen_)

    def _load_state(self, path: Path) -> None:
        self.models = {name: Recommender.load(path / "components" / name) for name in self.components}
        seen = path / "seen.npz"
        self.seen_ = sp.load_npz(seen).tocsr() if seen.exists() else None

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """The rank constant and list depth; weights per component come from ``weight_space``."""
        return {
            "c": trial.suggest_float("c", 1.0, 100.0, log=True),
            "depth": trial.suggest_categorical("depth", [20, 50, 100, 200]),
        }

    @staticmethod
    def weight_space(trial: Any, components: list[str]) -> dict[str, Any]:
        weights = [trial.suggest_float(f"weight_{name}", 0.0, 1.0) for name in components]
        return {
            "components": list(components),
            "weights": weights,
            **ReciprocalRankFusion.search_space(trial),
        }
