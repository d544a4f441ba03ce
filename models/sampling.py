"""Negative sampling shared by the models trained on (user, positive, negative) examples (NeuMF, LightGCN)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def observed_pairs(matrix: sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, items) of the positive entries and the sorted ``user * n_items + item`` keys of those pairs."""
    n_items = matrix.shape[1]
    positives = matrix.tocoo()
    keep = positives.data > 0
    users, items = positives.row[keep].astype(np.int64), positives.col[keep].astype(np.int64)
    return users, items, np.unique(users * n_items + items)


def is_seen(keys: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Which ``user * n_items + item`` keys are among the sorted ``seen`` keys."""
    if len(seen) == 0:
        return np.zeros(len(keys), dtype=bool)
    position = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
    return seen[position] == keys


def sample_unseen(
    users: np.ndarray, seen: np.ndarray, n_items: int, rng: np.random.Generator, tries: int = 20
) -> np.ndarray:
    """One uniform random item per entry of ``users`` that the user has not interacted with.

    Rejection sampling against the sorted ``user * n_items + item`` keys; a draw still colliding after
    ``tries`` rounds (a user who has seen almost everything) is kept as it is."""
    items = rng.integers(0, n_items, size=len(users))
    for _ in range(tries):
        clash = np.flatnonzero(is_seen(users * n_items + items, seen))
        if len(clash) == 0:
            break
        items[clash] = rng.integers(0, n_items, size=len(clash))
    return items
