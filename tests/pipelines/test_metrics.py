"""Metric values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from pipelines import metrics
from pipelines.metrics import (
    METRICS,
    at_k,
    catalogue_coverage,
    intra_list_diversity,
    novelty,
    paired_bootstrap_ci,
    per_user_metrics,
    ranking_metrics,
)


def _relevant(rows: list[list[int]], n_items: int = 10) -> sp.csr_matrix:
    data = [(r, i) for r, items in enumerate(rows) for i in items]
    r, c = zip(*data, strict=True)
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_items))


def test_single_user_hand_computed() -> None:
    # recommended 5,1,7 ; relevant {1, 7, 9}: hits at ranks 2 and 3
    m = ranking_metrics(np.array([[5, 1, 7]]), _relevant([[1, 7, 9]]), k=3)
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg"] == pytest.approx(dcg / idcg)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["map"] == pytest.approx((1 / 2 + 2 / 3) / 3)  # MS Recommenders: divided by |relevant|
    assert m["hit"] == 1.0
    assert m["mrr"] == pytest.approx(1 / 2)


def test_mean_over_users_and_misses() -> None:
    m = ranking_metrics(np.array([[0, 1], [2, 3]]), _relevant([[0], [9]]), k=2)
    assert m["ndcg"] == pytest.approx(0.5)  # user 0 perfect, user 1 nothing
    assert m["precision"] == pytest.approx(0.25)
    assert m["hit"] == pytest.approx(0.5)
    assert m["mrr"] == pytest.approx(0.5)


def test_unknown_relevant_items_count_in_recall() -> None:
    # one known relevant item recommended, but the user had 4 held-out items (3 unknown to the model)
    m = ranking_metrics(np.array([[3, 4]]), _relevant([[3]]), n_relevant=np.array([4]), k=2)
    assert m["recall"] == pytest.approx(0.25)
    assert m["ndcg"] == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_empty_slots_are_misses() -> None:
    m = ranking_metrics(np.array([[2, -1]]), _relevant([[2]]), k=2)
    assert m["precision"] == pytest.approx(0.5)
    assert m["ndcg"] == pytest.approx(1.0)


def test_user_without_relevant_items_is_an_error() -> None:
    with pytest.raises(ValueError):
        ranking_metrics(np.array([[0]]), sp.csr_matrix((1, 3)), k=1)


def test_per_user_metrics_hand_computed_and_their_means() -> None:
    recommended = np.array([[5, 1, 7], [2, -1, 4], [0, 3, 6]])
    relevant = _relevant([[1, 7, 9], [4], [8, 9]])
    per_user = per_user_metrics(recommended, relevant, k=3)
    g2, g3 = 1 / math.log2(3), 1 / math.log2(4)  # gains at ranks 2 and 3 (g3 = 0.5)
    # user 0: hits at ranks 2, 3 of 3 relevant; user 1: empty slot, then a hit at rank 3 of 1; user 2: nothing
    expected = {
        "ndcg": [(g2 + g3) / (1 + g2 + g3), g3 / 1, 0],
        "precision": [2 / 3, 1 / 3, 0],
        "recall": [2 / 3, 1, 0],
        "map": [(1 / 2 + 2 / 3) / 3, (1 / 3) / 1, 0],
        "hit": [1, 1, 0],
        "mrr": [1 / 2, 1 / 3, 0],
    }
    assert set(per_user) == set(METRICS)
    for name, values in expected.items():
        np.testing.assert_allclose(per_user[name], values, err_msg=name)
    means = ranking_metrics(recommended, relevant, k=3)
    assert means == pytest.approx({name: float(np.mean(v)) for name, v in expected.items()})
    assert at_k(means, 3)["ndcg@3"] == means["ndcg"]


def test_catalogue_coverage() -> None:
    # items 0, 1, 2 appear (1 twice); -1 slots ignored: 3 of 10 items
    assert catalogue_coverage(np.array([[0, 1, -1], [1, 2, -1]]), n_items=10) == pytest.approx(0.3)
    assert catalogue_coverage(np.full((2, 2), -1), n_items=5) == 0.0


def test_intra_list_diversity_hand_computed() -> None:
    categories = np.array([0, 0, 1, -1, 2])  # item 3 has no category
    recommended = np.array(
        [
            [0, 1, 2],  # categories 0,0,1: 3 pairs, 1 same -> 2/3
            [0, 3, 4],  # 0,?,2: the one known pair differs -> 1
            [3, -1, 0],  # a single known item: no pair, left out of the mean
        ]
    )
    assert intra_list_diversity(recommended, categories) == pytest.approx((2 / 3 + 1) / 2)
    assert intra_list_diversity(np.array([[0, 1]]), categories) == 0.0  # same category
    assert math.isnan(intra_list_diversity(recommended, np.full(5, -1)))  # no category known


def test_novelty_hand_computed() -> None:
    popularity = np.array([50, 25, 0, 100])  # of 100 users
    # item 0: -log2(0.5) = 1; item 1: -log2(0.25) = 2; item 2 clipped to 1 user: -log2(0.01) = log2(100)
    novelty_value = novelty(np.array([[0, 1], [2, -1]]), popularity, n_users=100)
    assert novelty_value == pytest.approx((1 + 2 + math.log2(100)) / 3)
    assert novelty(np.array([[3]]), popularity, n_users=100) == 0.0  # everyone has seen it: no information


def test_bootstrap_identical_arrays_give_a_zero_interval() -> None:
    a = np.random.default_rng(1).random(50)
    ci = paired_bootstrap_ci(a, a.copy())
    assert (ci["difference"], ci["low"], ci["high"]) == (0.0, 0.0, 0.0)
    assert ci["p_value"] == 1.0  # every resampled difference is <= 0
    # a constant difference c: every resample's mean is c
    assert paired_bootstrap_ci(a + 0.25, a)["low"] == pytest.approx(0.25)


def test_bootstrap_two_users_hand_computed() -> None:
    # differences [1, 0]: a resample's mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4
    ci = paired_bootstrap_ci(np.array([1.0, 0.0]), np.zeros(2), n_resamples=20_000)
    assert ci["difference"] == 0.5
    assert (ci["low"], ci["high"]) == (0.0, 1.0)
    assert ci["p_value"] == pytest.approx(0.25, abs=0.02)


def test_bootstrap_clearly_better_and_reproducible() -> None:
    rng = np.random.default_rng(0)
    b = rng.random(300)
    a = b + 0.1 + rng.normal(0, 0.05, 300)
    ci = paired_bootstrap_ci(a, b, seed=7)
    assert 0 < ci["low"] <= ci["difference"] <= ci["high"]
    assert ci["difference"] == pytest.approx(0.1, abs=0.02)
    assert ci["p_value"] == 0.0
    assert paired_bootstrap_ci(a, b, seed=7) == ci
    assert paired_bootstrap_ci(a, b, seed=8)["low"] != ci["low"]


def test_bootstrap_blocks_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(100), rng.random(100)
    whole = paired_bootstrap_ci(a, b)
    monkeypatch.setattr(metrics, "_BOOTSTRAP_BLOCK", 1000)  # 10 resamples per block
    assert paired_bootstrap_ci(a, b) == whole


def test_bootstrap_needs_paired_arrays() -> None:
    with pytest.raises(ValueError):
        paired_bootstrap_ci(np.zeros(3), np.zeros(4))


def test_per_user_metrics_when_nobody_got_an_item() -> None:
    """A model that knows none of the test users or items recommends nothing: every metric is 0."""
    relevant = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]]))
    per_user = per_user_metrics(np.full((2, 3), -1), relevant, k=3)
    assert all((values == 0).all() for values in per_user.values())
