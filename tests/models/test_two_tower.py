"""TwoTower: shapes, side features, new items, determinism, persistence, tuning and ML-100k quality."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from models.base import InteractionData, Recommender
from models.two_tower import TwoTower
from tests.models.conftest import Evaluate, Split

# Small and hot enough to learn the two clusters of the tiny data in well under a second.
TINY = {"embedding_dim": 8, "epochs": 40, "batch_size": 8, "learning_rate": 0.05, "temperature": 0.2}


def without_features(data: InteractionData) -> InteractionData:
    return InteractionData(data.matrix, data.user_ids, data.item_ids)


@pytest.fixture(scope="module")
def fitted(tiny: InteractionData) -> TwoTower:
    return TwoTower(**TINY, seed=1).fit(tiny)


def test_scores_are_dot_products_of_unit_embeddings(fitted: TwoTower, tiny: InteractionData) -> None:
    scores = fitted.score(np.array([0, 5, 11]))
    assert scores.shape == (3, tiny.n_items)
    assert fitted.user_embeddings_.shape == (12, 8) and fitted.item_embeddings_.shape == (8, 8)
    np.testing.assert_allclose(np.linalg.norm(fitted.item_embeddings_, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scores, fitted.user_embeddings_[[0, 5, 11]] @ fitted.item_embeddings_.T)


def test_learns_clusters_and_recommend_excludes_seen(fitted: TwoTower, tiny: InteractionData) -> None:
    items, _ = fitted.recommend(np.arange(12), k=2, exclude=tiny.matrix)
    for user, row in enumerate(items):
        assert not set(row) & set(tiny.matrix[user].indices)
        cluster = range(0, 4) if user < 6 else range(4, 8)
        assert row[0] in cluster, f"user {user} got {row}"


def test_same_seed_same_model_other_seed_differs(fitted: TwoTower, tiny: InteractionData) -> None:
    again = TwoTower(**TINY, seed=1).fit(tiny)
    np.testing.assert_array_equal(again.score(np.arange(12)), fitted.score(np.arange(12)))
    other = TwoTower(**TINY, seed=2).fit(tiny)
    assert not np.allclose(other.score(np.arange(12)), fitted.score(np.arange(12)))


def test_side_features_change_the_model(fitted: TwoTower, tiny: InteractionData) -> None:
    ids_only = TwoTower(**TINY, seed=1).fit(without_features(tiny))
    assert ids_only.score(np.arange(12)).shape == (12, 8)
    assert not np.allclose(ids_only.score(np.arange(12)), fitted.score(np.arange(12)))


def test_save_load_round_trip(fitted: TwoTower, tmp_path: Path) -> None:
    fitted.save(tmp_path / "tt")
    loaded = Recommender.load(tmp_path / "tt")
    assert isinstance(loaded, TwoTower) and loaded.params == fitted.params
    np.testing.assert_array_equal(loaded.score(np.arange(12)), fitted.score(np.arange(12)))
    np.testing.assert_array_equal(loaded.item_projection_, fitted.item_projection_)
    np.testing.assert_array_equal(
        loaded.score_new_items(np.arange(12), NEW_ITEMS), fitted.score_new_items(np.arange(12), NEW_ITEMS)
    )


# Brand-new items with only side features: cluster A's one-hot (plus the noise column), then cluster B's.
NEW_ITEMS = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]], dtype=np.float32)


def test_new_items_are_embedded_from_their_features(fitted: TwoTower, tiny: InteractionData) -> None:
    assert fitted.item_projection_.shape == (tiny.item_features.shape[1], 8)
    vectors = fitted.embed_new_items(NEW_ITEMS)
    expected = NEW_ITEMS @ fitted.item_projection_
    np.testing.assert_allclose(vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-5)
    scores = fitted.score_new_items(np.arange(12), NEW_ITEMS)
    assert scores.shape == (12, 2)
    np.testing.assert_allclose(scores, fitted.user_embeddings_ @ vectors.T, rtol=1e-5)


def test_new_items_reach_their_own_cluster(fitted: TwoTower) -> None:
    # Measured on seeds 0-9: every cluster-A user scores the new A item at least 0.28 above every
    # cluster-B user (0.31 on this seed), and the other way round for the new B item.
    scores = fitted.score_new_items(np.arange(12), NEW_ITEMS)
    assert scores[:6, 0].min() > scores[6:, 0].max() + 0.15
    assert scores[6:, 1].min() > scores[:6, 1].max() + 0.15


def test_new_items_need_the_features_the_model_was_fitted_with(
    fitted: TwoTower, tiny: InteractionData, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="expected 3 item features"):
        fitted.embed_new_items(np.ones((1, 5), dtype=np.float32))
    ids_only = TwoTower(**{**TINY, "epochs": 1}).fit(without_features(tiny))
    assert ids_only.item_projection_ is None
    with pytest.raises(ValueError, match="without item features"):
        ids_only.embed_new_items(NEW_ITEMS)
    ids_only.save(tmp_path / "tt")  # no projection file is written, and loading restores None
    assert Recommender.load(tmp_path / "tt").item_projection_ is None


def test_search_space_gives_constructor_kwargs() -> None:
    trial = optuna.trial.FixedTrial(
        {"embedding_dim": 32, "epochs": 5, "learning_rate": 0.01, "temperature": 0.1}
    )
    model = TwoTower(**TwoTower.search_space(trial))
    assert (model.embedding_dim, model.epochs, model.learning_rate, model.temperature) == (32, 5, 0.01, 0.1)


@pytest.mark.slow
def test_ml100k_quality_and_speed(ml100k: Split, ml100k_ndcg: Evaluate) -> None:
    start = time.perf_counter()
    model = TwoTower().fit(ml100k.train)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model.score(np.arange(ml100k.train.n_users))
    score_seconds = time.perf_counter() - start
    quality = ml100k_ndcg(model)
    print(f"two-tower ML-100k nDCG@10={quality:.4f} fit {fit_seconds:.2f}s score-all {score_seconds:.3f}s")
    assert quality > 0.35
    assert fit_seconds < 60


def test_loading_and_scoring_need_no_tensorflow(tiny: InteractionData, tmp_path: Path) -> None:
    import subprocess
    import sys

    TwoTower(epochs=1).fit(tiny).save(tmp_path / "tt")
    code = (
        "import sys; from models.base import Recommender; import numpy as np; "
        f"m = Recommender.load({str(tmp_path / 'tt')!r}); m.score(np.arange(3)); "
        "m.score_new_items(np.arange(3), np.ones((2, 3), dtype=np.float32)); "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_reports_each_epoch_with_scores_that_work(tiny: InteractionData) -> None:
    model = TwoTower(embedding_dim=8, epochs=3, batch_size=8, seed=0)
    seen: list[tuple[int, tuple[int, int]]] = []
    model.epoch_callback = lambda epoch: seen.append((epoch, model.score(np.arange(2)).shape))
    model.fit(tiny)
    assert seen == [(0, (2, 8)), (1, (2, 8)), (2, (2, 8))]
