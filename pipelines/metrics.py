"""Ranking metrics: one computation shared by tuning, selection, evaluation, the DAG and `fusionrec bench`.

Definitions follow Microsoft Recommenders' python_evaluation (binary relevance): precision@k = hits / k,
recall@k = hits / |relevant|, nDCG@k with 1/log2(rank+1) gains and the ideal DCG over min(|relevant|, k),
MAP@k = sum of precision at each hit rank / |relevant|, hit@k, MRR@k.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

METRICS = ("ndcg", "precision", "recall", "map", "hit", "mrr")


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
    recs = np.asarray(recommended)[:, :k]
    rows = np.repeat(np.arange(recs.shape[0]), recs.shape[1]).reshape(recs.shape)
    valid = recs >= 0
    hits = np.zeros(recs.shape, dtype=bool)
    hits[valid] = np.asarray(relevant[rows[valid], recs[valid]]).ravel() > 0
    n_rel = np.asarray(relevant.getnnz(axis=1) if n_relevant is None else n_relevant, dtype=np.float64)
    if (n_rel <= 0).any():
        raise ValueError("every evaluated user needs at least one relevant item")
    ranks = np.arange(1, recs.shape[1] + 1)
    n_hits = hits.sum(axis=1)
    dcg = (hits / np.log2(ranks + 1)).sum(axis=1)
    ideal_gains = 1.0 / np.log2(ranks + 1)
    idcg = np.cumsum(ideal_gains)[np.minimum(n_rel, recs.shape[1]).astype(int) - 1]
    cum_hits = np.cumsum(hits, axis=1)
    average_precision = ((cum_hits / ranks) * hits).sum(axis=1) / n_rel
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    return {
        "ndcg": float(np.mean(dcg / idcg)),
        "precision": float(np.mean(n_hits / k)),
        "recall": float(np.mean(n_hits / n_rel)),
        "map": float(np.mean(average_precision)),
        "hit": float(np.mean(n_hits > 0)),
        "mrr": float(np.mean(1.0 / first_hit)),
    }


def at_k(metrics: dict[str, float], k: int) -> dict[str, float]:
    """Name metrics the way they are logged and reported: ``ndcg@10``."""
    return {f"{name}@{k}": value for name, value in metrics.items()}
