"""Weighted score fusion of several fitted recommenders.

``score = sum_m w_m * normalize(score_m)``, normalising each component per user row so that models with
different score scales (counts, EASE weights, cosines) can be mixed by weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.base import InteractionData, Recommender
from models.registry import create_model

NORMALIZERS = ("minmax", "zscore")


def normalize_scores(scores: np.ndarray, method: str = "minmax") -> np.ndarray:
    """Normalise each row of a (n_users, n_items) score matrix; a constant row becomes all zeros.

    ``minmax`` maps a row onto [0, 1]; ``zscore`` gives it mean 0 and standard deviation 1.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if method == "minmax":
        low = scores.min(axis=1, keepdims=True)
        spread = scores.max(axis=1, keepdims=True) - low
        centred = scores - low
    elif method == "zscore":
        spread = scores.std(axis=1, keepdims=True)
        centred = scores - scores.mean(axis=1, keepdims=True)
    else:
        raise ValueError(f"unknown normalisation {method!r}; use one of {', '.join(NORMALIZERS)}")
    return np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 0)


class WeightedBlend(Recommender):
    """Per-user-normalised weighted sum of component recommenders.

    ``components`` names the components (their sub-folders when saved). Built with ``from_models`` the
    components are given, fitted objects; built from the constructor alone, each name must be a registry
    key and ``fit`` creates it with ``component_params[name]`` (default: the model's own defaults).
    """

    name = "blend"

    def __init__(
        self,
        components: list[str],
        weights: list[float],
        normalize: str = "minmax",
        component_params: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        if len(components) != len(weights):
            raise ValueError(f"blend: {len(components)} components but {len(weights)} weights")
        if not any(weights):
            raise ValueError("blend: at least one weight must be non-zero")
        if normalize not in NORMALIZERS:
            raise ValueError(f"blend: unknown normalize {normalize!r}; use one of {', '.join(NORMALIZERS)}")
        super().__init__(
            components=list(components),
            weights=[float(w) for w in weights],
            normalize=normalize,
            component_params=dict(component_params or {}),
        )
        self.components = list(components)
        self.weights = [float(w) for w in weights]
        self.normalize = normalize
        self.component_params = dict(component_params or {})
        self.models: dict[str, Recommender] = {}
        self._fitted: set[str] = set()

    @classmethod
    def from_models(
        cls,
        models: dict[str, Recommender],
        weights: list[float] | dict[str, float],
        normalize: str = "minmax",
        fitted: bool = True,
    ) -> WeightedBlend:
        """Blend of already-built components keyed by name; ``weights`` by position or by name."""
        names = list(models)
        if isinstance(weights, dict):
            weights = [weights[name] for name in names]
        blend = cls(components=names, weights=list(weights), normalize=normalize)
        blend.models = dict(models)
        if fitted:
            blend._fitted = set(names)
        return blend

    def fit(self, data: InteractionData) -> WeightedBlend:
        for name in self.components:
            if name not in self.models:
                self.models[name] = create_model(name, **self.component_params.get(name, {}))
            if name not in self._fitted:
                self.models[name].fit(data)
                self._fitted.add(name)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if set(self.components) - self._fitted:
            raise RuntimeError("WeightedBlend.score called before its components were fitted")
        total = None
        for name, weight in zip(self.components, self.weights, strict=True):
            if weight != 0.0:  # a zero-weight component changes nothing; skip its cost
                part = weight * normalize_scores(self.models[name].score(user_idx), self.normalize)
                total = part if total is None else total + part
        return total

    def _save_state(self, path: Path) -> None:
        for name in self.components:
            self.models[name].save(path / "components" / name)

    def _load_state(self, path: Path) -> None:
        self.models = {name: Recommender.load(path / "components" / name) for name in self.components}
        self._fitted = set(self.components)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Only the normalisation: weights depend on the components, see ``weight_space``."""
        return {"normalize": trial.suggest_categorical("normalize", list(NORMALIZERS))}

    @staticmethod
    def weight_space(trial: Any, components: list[str]) -> dict[str, Any]:
        """Full constructor kwargs for blending ``components``: a weight in [0, 1] each plus the normalisation."""
        weights = [trial.suggest_float(f"weight_{name}", 0.0, 1.0) for name in components]
        return {"components": list(components), "weights": weights, **WeightedBlend.search_space(trial)}
