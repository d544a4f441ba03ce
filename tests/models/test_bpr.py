"""BPR: sampling matrix, bias handling, epoch reporting, determinism, persistence, tuning, ML-100k quality."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import scipy.sparse as sp

from models.base import InteractionData, Recommender
from models.bpr import BPR, sampling_matrix
from tests.models.conftest import Evaluate, Split

# 24 interactions make a noisy SGD: these learn the tiny clusters for 10 seeds out of 10.
TINY = {
    "factors": 8,
    "learning_rate": 0.02,
    "regularization": 0.05,
    "iterations": 500,
    "uniform_negatives": 0.5,
}


@pytest.fixture(scope="module")
def fitted(tiny: InteractionData) -> BPR:
    return BPR(**TINY, seed=1).fit(tiny)


def test_sampling_matrix_pads_with_all_item_rows(tiny: InteractionData) -> None:
    padded = sampling_matrix(tiny.matrix, 0.5)
    # 24 positives over 8 items: 3 all-item rows put 24 uniform entries beside them
    assert padded.shape == (15, 8) and padded.nnz == 48 and padded.has_sorted_indices
    np.testing.assert_array_equal(padded[:12].toarray(), tiny.matrix.toarray() > 0)
    assert (padded[12:].toarray() == 1).all()
    assert sampling_matrix(tiny.matrix, 0.0).shape == (12, 8)
    assert sampling_matrix(tiny.matrix, 0.8).shape[0] == 12 + 12  # 4 * 24 / 8


def test_sampling_rows_never_train(tiny: InteractionData) -> None:
    """The padding relies on implicit skipping a negative the user has seen; check that it still does."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    padded = sampling_matrix(tiny.matrix, 0.8)
    rng = np.random.default_rng(0)
    model = BayesianPersonalizedRanking(factors=4, iterations=20, num_threads=1, random_state=0)
    model.user_factors = rng.random((padded.shape[0], 5), dtype=np.float32)
    model.item_factors = rng.random((8, 5), dtype=np.float32)
    before = model.user_factors.copy()
    model.fit(padded, show_progress=False)
    np.testing.assert_array_equal(model.user_factors[12:], before[12:])
    assert not np.allclose(model.user_factors[:12], before[:12])


def test_scores_are_factors_plus_item_bias(fitted: BPR, tiny: InteractionData) -> None:
    scores = fitted.score(np.array([0, 5, 11]))
    assert scores.shape == (3, 8) and scores.dtype == np.float32
    assert fitted.user_factors_.shape == (12, 8) and fitted.item_factors_.shape == (8, 8)
    assert fitted.item_bias_.shape == (8,) and fitted.item_bias_.std() > 0
    expected = fitted.user_factors_[[0, 5, 11]] @ fitted.item_factors_.T + fitted.item_bias_
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_learns_clusters_and_recommend_excludes_seen(fitted: BPR, tiny: InteractionData) -> None:
    items, _ = fitted.recommend(np.arange(12), k=2, exclude=tiny.matrix)
    for user, row in enumerate(items):
        assert not set(row) & set(tiny.matrix[user].indices)
        cluster = range(0, 4) if user < 6 else range(4, 8)
        assert row[0] in cluster, f"user {user} got {row}"


def test_reports_every_iteration_with_live_scores(tiny: InteractionData) -> None:
    model = BPR(**{**TINY, "iterations": 5})
    snapshots: list[np.ndarray] = []
    model.epoch_callback = lambda epoch: snapshots.append(model.score(np.arange(12)).copy())
    model.fit(tiny)
    assert len(snapshots) == 5
    assert not np.allclose(snapshots[0], snapshots[-1])  # score reads the factors of that epoch
    np.testing.assert_array_equal(snapshots[-1], model.score(np.arange(12)))


def test_same_seed_same_model_other_seed_differs(fitted: BPR, tiny: InteractionData) -> None:
    again = BPR(**TINY, seed=1).fit(tiny)
    np.testing.assert_array_equal(again.score(np.arange(12)), fitted.score(np.arange(12)))
    assert not np.allclose(BPR(**TINY, seed=2).fit(tiny).score(np.arange(12)), fitted.score(np.arange(12)))


def test_cold_users_score_by_item_bias(tiny: InteractionData) -> None:
    matrix = sp.vstack([tiny.matrix, sp.csr_matrix((1, 8))]).tolil()
    matrix[:, 3] = 0
    model = BPR(**TINY).fit(InteractionData(matrix.tocsr(), np.arange(13), tiny.item_ids))
    scores = model.score(np.arange(13))
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores[12], model.item_bias_)


def test_uniform_negatives_must_be_a_share() -> None:
    with pytest.raises(ValueError, match="uniform_negatives"):
        BPR(uniform_negatives=1.0)


def test_save_load_round_trip_without_implicit(fitted: BPR, tmp_path: Path) -> None:
    fitted.save(tmp_path / "bpr")
    loaded = Recommender.load(tmp_path / "bpr")
    assert isinstance(loaded, BPR) and loaded.params == fitted.params
    np.testing.assert_array_equal(loaded.score(np.arange(12)), fitted.score(np.arange(12)))
    code = (
        "import sys; from models.base import Recommender; import numpy as np; "
        f"Recommender.load({str(tmp_path / 'bpr')!r}).score(np.arange(3)); print('implicit' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_search_space_drives_an_optuna_study(tiny: InteractionData) -> None:
    def objective(trial: optuna.Trial) -> float:
        params = BPR.search_space(trial)
        assert 1e-3 <= params["learning_rate"] <= 5e-2 and 0 <= params["uniform_negatives"] < 1
        return float(BPR(**params).fit(tiny).score(np.array([0])).max())

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=3)
    assert all(t.state.name == "COMPLETE" for t in study.trials)


@pytest.mark.slow
def test_ml100k_quality_and_speed(ml100k: Split, ml100k_ndcg: Evaluate) -> None:
    start = time.perf_counter()
    model = BPR().fit(ml100k.train)
    fit_seconds = time.perf_counter() - start
    quality = ml100k_ndcg(model)
    print(f"BPR ML-100k nDCG@10={quality:.4f} fit {fit_seconds:.2f}s")
    # measured: 0.423 with the defaults (seeds 1, 2: 0.423, 0.417; ~7 s). Without uniform negatives implicit's
    # BPR peaks at 0.38 around 50 epochs and falls to 0.29 by 100; popularity scores 0.252.
    assert quality > 0.40
    assert fit_seconds < 60
