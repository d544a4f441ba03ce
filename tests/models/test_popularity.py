"""Popularity: counts per item, same for every user."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from models.base import InteractionData, Recommender
from models.popularity import Popularity
from tests.models.conftest import Evaluate, Split


def test_scores_are_distinct_user_counts(tiny: InteractionData) -> None:
    scores = Popularity().fit(tiny).score(np.array([0, 7]))
    # items 0..3 are seen by 5, 3, 3, 1 users of the first cluster; the second cluster mirrors it
    expected = np.array([5, 3, 3, 1, 5, 3, 3, 1], dtype=np.float32)
    assert scores.shape == (2, 8)
    np.testing.assert_array_equal(scores, np.vstack([expected, expected]))


def test_weighted_counts_use_interaction_weights(tiny: InteractionData) -> None:
    scores = Popularity(binarize=False).fit(tiny).score(np.array([3]))
    assert scores[0, 0] == 6.0  # user 0 bought item 0 twice


def test_recommend_excludes_seen_items(tiny: InteractionData) -> None:
    items, _ = Popularity().fit(tiny).recommend(np.arange(12), k=2, exclude=tiny.matrix)
    for user, row in enumerate(items):
        assert not set(row) & set(tiny.matrix[user].indices)
    assert items[0, 0] == 4  # user 0 saw item 0, so the next most popular (5 users) comes first


def test_save_load_round_trip(tiny: InteractionData, tmp_path: Path) -> None:
    model = Popularity(binarize=False).fit(tiny)
    model.save(tmp_path / "pop")
    loaded = Recommender.load(tmp_path / "pop")
    assert isinstance(loaded, Popularity) and loaded.params == {"binarize": False}
    np.testing.assert_array_equal(loaded.score(np.arange(12)), model.score(np.arange(12)))


def test_search_space_gives_constructor_kwargs() -> None:
    params = Popularity.search_space(optuna.trial.FixedTrial({"binarize": False}))
    assert Popularity(**params).params == {"binarize": False}


@pytest.mark.slow
def test_ml100k_quality_floor(ml100k: Split, ml100k_ndcg: Evaluate) -> None:
    start = time.perf_counter()
    model = Popularity().fit(ml100k.train)
    quality = ml100k_ndcg(model)
    print(f"popularity ML-100k nDCG@10={quality:.4f} fit+eval {time.perf_counter() - start:.2f}s")
    assert quality > 0.2
