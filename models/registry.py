"""Recommenders by name: adding a model is one file plus one line here."""

from __future__ import annotations

import importlib
from typing import Any

from models.base import Recommender

# name -> "module:Class"; imported lazily so TensorFlow loads only when a deep model is asked for.
_MODELS: dict[str, str] = {
    "popularity": "models.popularity:Popularity",
    "buy_again": "models.buy_again:BuyAgain",
    "itemknn": "models.itemknn:ItemKNN",
    "ease": "models.ease:EASE",
    "ials": "models.ials:IALS",
    "spark_als": "models.spark_als:SparkALS",
    "bpr": "models.bpr:BPR",
    "content": "models.content:ContentTFIDF",
    "two_tower": "models.two_tower:TwoTower",
    "neumf": "models.neumf:NeuMF",
    "sasrec": "models.sasrec:SASRec",
    "lightgcn": "models.lightgcn:LightGCN",
    # fusions: built from fitted components by the fuse stage
    "blend": "models.blend:WeightedBlend",
    "rrf": "models.rank_fusion:ReciprocalRankFusion",
    "stacking": "models.stacking:Stacking",
}

# Fusion methods are not trained on their own: the fuse stage builds them from the base models.
FUSIONS = ("blend", "rrf", "stacking")


def available_models() -> list[str]:
    return sorted(_MODELS)


def base_models() -> list[str]:
    """Models the train stage can tune and fit on their own (everything but the fusions)."""
    return [name for name in available_models() if name not in FUSIONS]


def get_model_class(name: str) -> type[Recommender]:
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    module, cls = _MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_model(name: str, **params: Any) -> Recommender:
    return get_model_class(name)(**params)
