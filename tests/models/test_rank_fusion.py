"""Reciprocal-rank fusion: the arithmetic, seen-item handling, persistence and the search space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import scipy.sparse as sp

from models.base import InteractionData, Recommender
from models.ease import EASE
from models.popularity import Popularity
from models.rank_fusion import ReciprocalRankFusion, component_ranks


class Fixed(Recommender):
    """A recommender with given scores (one row per user), to check fusion arithmetic by hand."""

    name = "popularity"  # any registered name; never saved

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__()
        self.scores = np.asarray(scores, dtype=np.float32)

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.scores[np.asarray(user_idx)]


def test_component_ranks_are_one_based_and_zero_outside_depth() -> None:
    items, ranks = component_ranks(np.array([[0.1, 0.9, 0.5, -np.inf]]), depth=2)
    assert items.tolist() == [[1, 2]]
    assert ranks.tolist() == [[0, 1, 2, 0]]


def test_scores_are_weighted_reciprocal_ranks() -> None:
    a = Fixed([[3.0, 2.0, 1.0]])  # ranks 1, 2, 3
    b = Fixed([[1.0, 2.0, 3.0]])  # ranks 3, 2, 1
    fusion = ReciprocalRankFusion.from_models({"a": a, "b": b}, weights=[2.0, 1.0], c=1.0, depth=3)
    expected = [2 / 2 + 1 / 4, 2 / 3 + 1 / 3, 2 / 4 + 1 / 2]
    np.testing.assert_allclose(fusion.score(np.array([0])), [expected], atol=1e-5)
    assert fusion.recommend(np.array([0]), 1)[0].tolist() == [[0]]


def test_seen_items_do_not_push_others_down() -> None:
    # item 0 is seen: item 1 must get rank 1 (1/(c+1)), not rank 2
    fusion = ReciprocalRankFusion.from_models(
        {"a": Fixed([[3.0, 2.0, 1.0]])}, seen=sp.csr_matrix([[1.0, 0.0, 0.0]]), c=0.0, depth=3
    )
    scores = fusion.score(np.array([0]))
    assert scores[0, 1] == pytest.approx(1.0, abs=1e-5) and scores[0, 0] < scores[0, 2]


def test_items_outside_every_list_keep_a_tie_break_order() -> None:
    fusion = ReciprocalRankFusion.from_models({"a": Fixed([[4.0, 3.0, 2.0, 1.0]])}, depth=1)
    assert np.argsort(-fusion.score(np.array([0]))[0]).tolist() == [0, 1, 2, 3]


def test_round_trip_and_refuses_fit(tiny: InteractionData, tmp_path: Path) -> None:
    parts = {"ease": EASE(l2=2.0).fit(tiny), "popularity": Popularity().fit(tiny)}
    fusion = ReciprocalRankFusion.from_models(parts, seen=tiny.matrix, weights=[1.0, 0.5], depth=4)
    fusion.save(tmp_path / "rrf")
    loaded = Recommender.load(tmp_path / "rrf")
    users = np.arange(tiny.n_users)
    np.testing.assert_array_equal(loaded.score(users), fusion.score(users))
    with pytest.raises(TypeError, match="from_models"):
        fusion.fit(tiny)


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="2 components but 1 weights"):
        ReciprocalRankFusion(components=["a", "b"], weights=[1.0])
    with pytest.raises(ValueError, match="depth >= 1"):
        ReciprocalRankFusion(components=["a"], depth=0)


def test_weight_space_gives_constructor_kwargs() -> None:
    study = optuna.create_study()
    trial = study.ask()
    params = ReciprocalRankFusion.weight_space(trial, ["ease", "popularity"])
    fusion = ReciprocalRankFusion(**params)
    assert fusion.components == ["ease", "popularity"] and len(fusion.weights) == 2
