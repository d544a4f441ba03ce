"""EASE: closed-form weights, item restriction, persistence, tuning and ML-100k quality."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from models.base import InteractionData, Recommender
from models.ease import EASE, _spd_inverse, ease_weights, select_items
from tests.models.conftest import Evaluate, Split


def reference_weights(dense: np.ndarray, l2: float) -> np.ndarray:
    """Steck's formula in float64 with a general inverse, as a check on the Cholesky path."""
    precision = np.linalg.inv(dense.T @ dense + l2 * np.eye(dense.shape[1]))
    weights = np.eye(dense.shape[1]) - precision / np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return weights


def test_weights_match_closed_form(tiny: InteractionData) -> None:
    weights = ease_weights(tiny.matrix, l2=2.0)
    np.testing.assert_allclose(weights, reference_weights(tiny.matrix.toarray(), 2.0), atol=1e-5)
    assert weights.dtype == np.float32 and np.all(np.diag(weights) == 0)


def test_blockwise_cholesky_inverse_matches_numpy() -> None:
    # block smaller than n exercises the block-by-block mirroring of the upper triangle
    factor = np.random.default_rng(0).random((10, 10))
    spd = (factor @ factor.T + np.eye(10)).astype(np.float32)
    expected = np.linalg.inv(spd.astype(np.float64))
    inverse = _spd_inverse(spd.copy(), block=3)
    np.testing.assert_allclose(inverse, expected, rtol=1e-3, atol=1e-4)
    assert inverse.flags.c_contiguous


def test_scores_are_history_times_weights(tiny: InteractionData) -> None:
    model = EASE(l2=2.0).fit(tiny)
    scores = model.score(np.array([0, 11]))
    binary = (tiny.matrix.toarray() > 0).astype(np.float64)
    expected = binary[[0, 11]] @ reference_weights(binary, 2.0)
    assert scores.shape == (2, 8)
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_binarize_false_uses_weights(tiny: InteractionData) -> None:
    weighted = EASE(l2=2.0, binarize=False).fit(tiny).score(np.array([0]))
    expected = tiny.matrix.toarray()[[0]] @ reference_weights(tiny.matrix.toarray(), 2.0)
    np.testing.assert_allclose(weighted, expected, atol=1e-5)
    assert not np.allclose(weighted, EASE(l2=2.0).fit(tiny).score(np.array([0])))


def test_recommend_prefers_own_cluster_and_excludes_seen(tiny: InteractionData) -> None:
    items, _ = EASE(l2=1.0).fit(tiny).recommend(np.arange(12), k=3, exclude=tiny.matrix)
    for user, row in enumerate(items):
        assert not set(row) & set(tiny.matrix[user].indices)
        cluster = range(0, 4) if user < 6 else range(4, 8)
        assert row[0] in cluster, f"user {user} got {row}"


def test_select_items_threshold_then_cap_by_popularity() -> None:
    counts = np.array([5, 1, 3, 3, 0, 3])
    np.testing.assert_array_equal(select_items(counts, min_count=2, max_items=10), [0, 2, 3, 5])
    # cap 2: item 0, then the lowest index among the tied 3s
    np.testing.assert_array_equal(select_items(counts, min_count=1, max_items=2), [0, 2])


def test_rare_items_score_zero_and_the_rest_match_a_model_without_them(tiny: InteractionData) -> None:
    kept = np.array([0, 1, 2, 4, 5, 6])  # items 3 and 7 have a single user each
    scores = EASE(l2=2.0, min_count=2).fit(tiny).score(np.arange(12))
    assert np.all(scores[:, [3, 7]] == 0)
    restricted = InteractionData(tiny.matrix[:, kept].tocsr(), tiny.user_ids, tiny.item_ids[kept])
    np.testing.assert_allclose(scores[:, kept], EASE(l2=2.0).fit(restricted).score(np.arange(12)), atol=1e-6)


def test_l2_must_be_positive() -> None:
    with pytest.raises(ValueError, match="l2 must be > 0"):
        EASE(l2=0.0)


def test_save_load_round_trip(tiny: InteractionData, tmp_path: Path) -> None:
    model = EASE(l2=3.0, min_count=2).fit(tiny)
    model.save(tmp_path / "ease")
    loaded = Recommender.load(tmp_path / "ease")
    assert isinstance(loaded, EASE) and loaded.params == model.params
    np.testing.assert_array_equal(loaded.score(np.arange(12)), model.score(np.arange(12)))


def test_search_space_drives_an_optuna_study(tiny: InteractionData) -> None:
    fixed = EASE.search_space(optuna.trial.FixedTrial({"l2": 100.0, "binarize": True}))
    assert EASE(**fixed).l2 == 100.0

    def objective(trial: optuna.Trial) -> float:
        params = EASE.search_space(trial)
        assert 20.0 <= params["l2"] <= 3000.0
        return float(EASE(**params).fit(tiny).score(np.array([0])).max())

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=3)
    assert len(study.trials) == 3


@pytest.mark.slow
def test_ml100k_quality_and_speed(ml100k: Split, ml100k_ndcg: Evaluate) -> None:
    start = time.perf_counter()
    model = EASE().fit(ml100k.train)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model.score(np.arange(ml100k.train.n_users))
    score_seconds = time.perf_counter() - start
    quality = ml100k_ndcg(model)
    print(f"EASE ML-100k nDCG@10={quality:.4f} fit {fit_seconds:.2f}s score-all {score_seconds:.3f}s")
    assert quality > 0.4
    assert score_seconds < 1.0
