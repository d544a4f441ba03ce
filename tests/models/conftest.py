"""Model fixtures: a tiny two-cluster data set, a seeded 75/25 ML-100k split and a small nDCG@k."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp

from models.base import InteractionData, Recommender
from pipelines.metrics import ranking_metrics


@pytest.fixture(scope="session")
def tiny() -> InteractionData:
    """(Shared: do not mutate.) 12 users x 8 items in two taste clusters: users 0-5 like items 0-3, users 6-11 like items 4-7.

    Every user has seen 2 of their cluster's 4 items (different pairs), so the other two are what a good
    model recommends. Item 0 and item 4 are the most popular of their cluster; user 0 bought item 0 twice.
    """
    rows, cols = [], []
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (0, 1), (0, 2)]
    for user in range(12):
        first, second = pairs[user % 6]
        offset = 0 if user < 6 else 4
        rows += [user, user]
        cols += [first + offset, second + offset]
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(12, 8))
    matrix[0, 0] = 2.0
    rng = np.random.default_rng(0)
    return InteractionData(
        matrix=matrix,
        user_ids=np.array([f"u{u}" for u in range(12)]),
        item_ids=np.array([f"i{i}" for i in range(8)]),
        user_features=np.repeat(np.eye(2, dtype=np.float32), 6, axis=0),
        item_features=np.hstack(
            [np.repeat(np.eye(2, dtype=np.float32), 4, axis=0), rng.random((8, 1))]
        ).astype(np.float32),
    )


Evaluate = Callable[[Recommender], float]


@dataclass
class Split:
    train: InteractionData
    test: sp.csr_matrix


@pytest.fixture(scope="session")
def ml100k() -> Split:
    """ML-100k ratings as implicit feedback, split by protocol 1 (stratified 75/25 per item, seed 42)."""
    from pipelines.datasets import load_movielens_100k
    from pipelines.split import stratified_split
    from pipelines.splitdata import interaction_matrix

    train, test = stratified_split(load_movielens_100k().interactions, 0.75, "item_id", seed=42)
    user_ids = np.array(sorted(train["user_id"].unique()), dtype=object)
    item_ids = np.array(sorted(train["item_id"].unique()), dtype=object)
    matrix = interaction_matrix(train, user_ids, item_ids)
    return Split(InteractionData(matrix, user_ids, item_ids), interaction_matrix(test, user_ids, item_ids))


@pytest.fixture(scope="session")
def ml100k_ndcg(ml100k: Split) -> Evaluate:
    """nDCG@10 of a model fitted on ``ml100k.train``, against the held-out 25%, seen items excluded."""

    def evaluate(model: Recommender) -> float:
        users = np.arange(ml100k.train.n_users)
        recommended, _ = model.recommend(users, 10, exclude=ml100k.train.matrix)
        has_test = ml100k.test.getnnz(axis=1) > 0
        return ranking_metrics(recommended[has_test], ml100k.test[has_test], k=10)["ndcg"]

    return evaluate
