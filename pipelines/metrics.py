"""Ranking and beyond-accuracy metrics: one computation shared by tuning, selection, evaluation, the DAG and
`fusionrec bench`.

Accuracy definitions follow Microsoft Recommenders' python_evaluation (binary relevance): precision@k = hits / k,
recall@k = hits / |relevant|, nDCG@k with 1/log2(rank+1) gains and the ideal DCG over min(|relevant|, k),
MAP@k = sum of precision at each hit rank / |relevant|, hit@k, MRR@k. Beyond accuracy: catalogue coverage,
intra-list diversity by item category, novelty (self-information). A paired bootstrap compares two models on
the same users.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

METRICS = ("ndcg", "precision", "recall", "map", "hit", "mrr")

# Bootstrap resamples are drawn in blocks of at most this many user indices, to bound memory on large test sets.
_BOOTSTRAP_BLOCK = 4_000_000


def per_user_metrics(
    recommended: np.ndarray, relevant: sp.csr_matrix, n_relevant: np.ndarray | None = None, k: int = 10
) -> dict[str, np.ndarray]:
    """Each metric in ``METRICS`` per user: ``{name: float64 array (n_users,)}``; their means are
    ``ranking_metrics``. Inputs as in ``ranking_metrics``."""
    recs = np.asarray(recommended)[:, :k]
    rows = np.repeat(np.arange(recs.shape[0]), recs.shape[1]).reshape(recs.shape)
    valid = recs >= 0
    hits = np.zeros(recs.shape, dtype=bool)
    if valid.any():  # sparse fancy indexing with empty arrays returns a matrix, not an empty array
        hits[valid] = np.asarray(relevant[rows[valid], recs[valid]]).ravel() > 0
    n_rel = np.asarray(relevant.getnnz(axis=1) if n_relevant is None else n_relevant, dtype=np.float64)
    if (n_rel <= 0).any():
        raise ValueError("every evaluated user needs at least one relevant item")
    ranks = np.arange(1, recs.shape[1] + 1)
    n_hits = hits.sum(axis=1)
    dcg = (hits / np.log2(ranks + 1)).sum(axis=1)
    idcg = np.cumsum(1.0 / np.log2(ranks + 1))[np.minimum(n_rel, recs.shape[1]).astype(int) - 1]
    average_precision = ((np.cumsum(hits, axis=1) / ranks) * hits).sum(axis=1) / n_rel
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    return {
        "ndcg": dcg / idcg,
        "precision": n_hits / k,
        "recall": n_hits / n_rel,
        "map": average_precision,
        "hit": (n_hits > 0).astype(np.float64),
        "mrr": 1.0 / first_hit,
    }


def ranking_metrics(
    recommended: np.ndarray, relevant: sp.csr_matrix, n_relevant: np.ndarray | None = None, k: int = 10
) -> dict[str, float]:
    """Mean metrics over users.

    recommended: (n_users, >=k) item indices, best first (-1 = empty slot).
    relevant: (n_users, n_items) binary matrix of each user's held-out items (same row order).
    n_relevant: |relevant| per user when it exceeds the row's non-zeros (held-out items unknown to the model
        still count); defaults to the row counts.
    Users with no relevant item must be filtered out by the caller.
    """
    per_user = per_user_metrics(recommended, relevant, n_relevant, k)
    return {name: float(np.mean(values)) for name, values in per_user.items()}


def at_k(metrics: dict[str, float], k: int) -> dict[str, float]:
    """Name metrics the way they are logged and reported: ``ndcg@10``."""
    return {f"{name}@{k}": value for name, value in metrics.items()}


def catalogue_coverage(recommended: np.ndarray, n_items: int) -> float:
    """Share of the catalogue's ``n_items`` that appear in at least one user's list (-1 slots ignored)."""
    recs = np.asarray(recommended)
    return float(np.unique(recs[recs >= 0]).size / n_items)


def intra_list_diversity(recommended: np.ndarray, item_categories: np.ndarray) -> float:
    """Mean over users of the share of item pairs in the user's list whose categories differ.

    For a list with n items of known category, n_c of them in category c, there are n(n-1)/2 pairs, of which
    sum_c n_c(n_c-1)/2 share a category; the user's diversity is 1 - same / all. Items of unknown category
    (-1) and empty slots (-1) are left out of the pairs; users with fewer than two known items are left out of
    the mean. Returns nan when no user has such a pair (e.g. no item has a category).
    """
    recs = np.asarray(recommended)
    categories = np.asarray(item_categories)
    cats = np.where(recs >= 0, categories[np.maximum(recs, 0)], -1)
    known = cats >= 0
    n_known = known.sum(axis=1).astype(np.float64)
    pairs = n_known * (n_known - 1) / 2
    users = np.nonzero(known)[0]
    # count items per (user, category); every such group of n_c items contributes n_c(n_c-1)/2 same pairs
    _, group, counts = np.unique(
        np.stack([users, cats[known]]), axis=1, return_inverse=True, return_counts=True
    )
    group_user = np.zeros(counts.size, dtype=np.int64)
    group_user[group.ravel()] = users
    same = np.bincount(group_user, weights=counts * (counts - 1) / 2, minlength=recs.shape[0])
    scored = pairs > 0
    if not scored.any():
        return float("nan")
    return float(np.mean(1.0 - same[scored] / pairs[scored]))


def novelty(recommended: np.ndarray, item_popularity: np.ndarray, n_users: int) -> float:
    """Mean self-information -log2(pop_i / n_users) over all recommended slots (-1 slots ignored), as in
    Microsoft Recommenders' ``novelty``: rarely seen items are more novel.

    item_popularity: number of training users who interacted with each item; 0 is clipped to 1 (an unseen
    item is as novel as the rarest seen one) and values above n_users to n_users. nan when nothing is
    recommended.
    """
    recs = np.asarray(recommended)
    recs = recs[recs >= 0]
    if recs.size == 0:
        return float("nan")
    popularity = np.clip(np.asarray(item_popularity, dtype=np.float64)[recs], 1, n_users)
    return float(np.mean(-np.log2(popularity / n_users)))


def paired_bootstrap_ci(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Paired bootstrap of the mean difference a - b of two per-user metric arrays over the same users.

    Users are resampled with replacement (the same users for a and b, so user difficulty cancels).
    Returns ``difference`` (observed mean of a - b), ``low``/``high`` (percentile interval at ``confidence``),
    ``p_value`` (share of resamples whose mean difference is <= 0: small when a is reliably better) and
    ``confidence``.
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.ndim != 1 or diff.size == 0:
        raise ValueError("a and b must be non-empty 1-d arrays of the same users")
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_BLOCK // diff.size)
    means = np.concatenate(
        [
            diff[rng.integers(0, diff.size, size=(min(block, n_resamples - start), diff.size))].mean(axis=1)
            for start in range(0, n_resamples, block)
        ]
    )
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return {
        "difference": float(diff.mean()),
        "low": float(low),
        "high": float(high),
        "p_value": float(np.mean(means <= 0)),
        "confidence": confidence,
    }
