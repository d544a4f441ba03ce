"""Metric values worked out by hand."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from pipelines.metrics import ranking_metrics


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
