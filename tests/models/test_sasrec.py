"""SASRec: numpy forward pass against Keras, sequence handling, a learnable sequential pattern, persistence,
tuning and ML-100k quality."""

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
from models.sasrec import SASRec, last_items, user_sequences
from tests.models.conftest import Evaluate, Split

SMALL = {"hidden_dim": 16, "blocks": 2, "heads": 2, "max_len": 6, "batch_size": 16, "learning_rate": 0.01}


def with_history(matrix: sp.csr_matrix, history: list[np.ndarray]) -> InteractionData:
    n_users, n_items = matrix.shape
    return InteractionData(
        matrix, np.arange(n_users).astype(str), np.arange(n_items).astype(str), history=history
    )


def successor_data(n_users: int = 60, n_items: int = 12, length: int = 6, seed: int = 0) -> InteractionData:
    """Every user watches a run of consecutive items (mod ``n_items``): item i is always followed by i+1."""
    starts = np.random.default_rng(seed).integers(0, n_items, size=n_users)
    history = [(start + np.arange(length)) % n_items for start in starts]
    rows = np.repeat(np.arange(n_users), length)
    matrix = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, np.concatenate(history))), (n_users, n_items)
    )
    return with_history(matrix, history)


@pytest.fixture(scope="module")
def successor() -> InteractionData:
    return successor_data()


@pytest.fixture(scope="module")
def fitted(successor: InteractionData) -> tuple[SASRec, object]:
    model = SASRec(**SMALL, dropout=0.1, epochs=30, seed=1)
    network = model._fit_network(successor)
    return model, network


def test_numpy_scores_equal_the_keras_network(fitted: tuple[SASRec, object]) -> None:
    from models.sasrec_keras import last_position_scores

    model, network = fitted
    users, items = np.array([0, 3, 7, 11, 59]), np.array([1, 6, 0, 11, 4])
    keras_logits = last_position_scores(network, model.sequences_[users], items)
    np.testing.assert_allclose(model.score(users)[np.arange(len(users)), items], keras_logits, atol=1e-4)


def test_learns_that_item_i_is_followed_by_i_plus_1(
    fitted: tuple[SASRec, object], successor: InteractionData
) -> None:
    model, _ = fitted
    users = np.arange(successor.n_users)
    items, _ = model.recommend(users, k=1, exclude=successor.matrix)
    expected = np.array([(history[-1] + 1) % successor.n_items for history in successor.history])
    assert np.mean(items[:, 0] == expected) >= 0.9


def test_bce_loss_learns_the_pattern_too(successor: InteractionData) -> None:
    model = SASRec(**{**SMALL, "blocks": 1, "heads": 1}, loss="bce", dropout=0.0, epochs=30).fit(successor)
    items, _ = model.recommend(np.arange(successor.n_users), k=1, exclude=successor.matrix)
    expected = np.array([(history[-1] + 1) % successor.n_items for history in successor.history])
    assert np.mean(items[:, 0] == expected) >= 0.9


def test_sequences_fall_back_to_csr_order_and_keep_the_tail(tiny: InteractionData) -> None:
    sequences = user_sequences(tiny)  # tiny has no history
    assert [list(s) for s in sequences[:2]] == [[0, 1], [0, 2]]
    padded = last_items([np.array([4, 5, 6]), np.array([], dtype=np.int64), np.arange(10)], max_len=4)
    np.testing.assert_array_equal(padded, [[0, 5, 6, 7], [0, 0, 0, 0], [7, 8, 9, 10]])  # ids are item + 1


def test_training_windows_cover_every_transition_once() -> None:
    from models.sasrec_keras import training_windows

    inputs, targets = training_windows([np.arange(7), np.array([3]), np.array([8, 9])], max_len=3)
    np.testing.assert_array_equal(inputs, [[4, 5, 6], [1, 2, 3], [0, 0, 9]])
    np.testing.assert_array_equal(targets, [[5, 6, 7], [2, 3, 4], [0, 0, 10]])


def test_users_without_history_and_unseen_items_score(tiny: InteractionData) -> None:
    history = [np.array([0, 1, 0])] * 11 + [np.array([], dtype=np.int64)]  # repeats kept, one empty user
    data = with_history(tiny.matrix, history)
    model = SASRec(**SMALL, negatives=4, epochs=2).fit(data)  # 4 of 8 items: the sampled softmax
    scores = model.score(np.arange(12))
    assert scores.shape == (12, 8) and scores.dtype == np.float32 and np.isfinite(scores).all()


def test_report_epoch_each_epoch_with_working_scores(successor: InteractionData) -> None:
    model = SASRec(**SMALL, epochs=3)
    seen: list[tuple[int, np.ndarray]] = []
    model.epoch_callback = lambda epoch: seen.append((epoch, model.score(np.array([0]))))
    model.fit(successor)
    assert [epoch for epoch, _ in seen] == [0, 1, 2]
    assert not np.allclose(seen[0][1], seen[-1][1])  # the weights were exported afresh each epoch
    np.testing.assert_array_equal(seen[-1][1], model.score(np.array([0])))


def test_save_load_round_trip_without_tensorflow(fitted: tuple[SASRec, object], tmp_path: Path) -> None:
    model, _ = fitted
    model.save(tmp_path / "sasrec")
    loaded = Recommender.load(tmp_path / "sasrec")
    assert isinstance(loaded, SASRec) and loaded.params == model.params
    np.testing.assert_array_equal(loaded.score(np.arange(60)), model.score(np.arange(60)))
    code = (
        "import sys; from models.base import Recommender; import numpy as np; "
        f"m = Recommender.load({str(tmp_path / 'sasrec')!r}); m.score(np.arange(3)); "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_search_space_gives_constructor_kwargs() -> None:
    values = {
        "hidden_dim": 32,
        "blocks": 1,
        "heads": 2,
        "dropout": 0.3,
        "max_len": 100,
        "learning_rate": 0.002,
        "epochs": 12,
    }
    model = SASRec(**SASRec.search_space(optuna.trial.FixedTrial(values)))
    assert {name: getattr(model, name) for name in values} == values


def test_rejects_bad_heads_and_loss() -> None:
    with pytest.raises(ValueError, match="multiple of heads"):
        SASRec(hidden_dim=30, heads=4)
    with pytest.raises(ValueError, match="loss"):
        SASRec(loss="hinge")


@pytest.mark.slow
def test_ml100k_quality_and_speed(ml100k: Split, ml100k_ndcg: Evaluate) -> None:
    from pipelines.datasets import load_movielens_100k
    from pipelines.split import stratified_split
    from pipelines.splitdata import user_histories

    # The fixture has no time order: rebuild the same train split (seed 42) and order it by timestamp.
    train, _ = stratified_split(load_movielens_100k().interactions, 0.75, "item_id", seed=42)
    data = ml100k.train
    data = with_history(data.matrix, user_histories(train, data.user_ids, data.item_ids))
    start = time.perf_counter()
    model = SASRec().fit(data)
    fit_seconds = time.perf_counter() - start
    quality = ml100k_ndcg(model)
    print(f"SASRec ML-100k nDCG@10={quality:.4f} fit {fit_seconds:.2f}s")
    # Measured on this split: popularity 0.2520; SASRec defaults 0.3074 (seed 1: 0.2931). The hold-out is a
    # random 25% of each item's ratings, not the next items, so a next-item model trails EASE (> 0.4) here.
    assert quality > 0.28
    assert fit_seconds < 90
