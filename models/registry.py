"""Recommenders by name: adding a model is one file plus one line here."""

from __future__ import annotations

import importlib
from typing import Any

from models.base import Recommender

# name -> "module:Class"; imported lazily so TensorFlow loads only when a deep model is asked for.
_MODELS: dict[str, str] = {
    "popularity": "models.popularity:Popularity",
    "buy_again": "models.buy_again:BuyAgain",
    "ease": "models.ease:EASE",
    "two_tower": "models.two_tower:TwoTower",
    "blend": "models.blend:WeightedBlend",
}


def available_models() -> list[str]:
    return sorted(_MODELS)


def get_model_class(name: str) -> type[Recommender]:
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    module, cls = _MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_model(name: str, **params: Any) -> Recommender:
    return get_model_class(name)(**params)
