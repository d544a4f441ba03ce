"""Item-based k-nearest-neighbours collaborative filtering (Sarwar et al. 2001; Dacrema et al. 2019 setup).

Items are vectors over users. The similarity of items ``i`` and ``j`` is a shrunk cosine,
``dot(x_i, x_j) / (|x_i| |x_j| + shrink)``, so pairs supported by few common users are damped. Only the
``neighbors`` most similar items of each item are kept, and a user's scores are their history times that
sparse similarity: ``score[u, j] = sum over seen i of sim(i, j)``, over the items ``i`` that are among j's
neighbours.

The item x item product is never materialised: it is computed as sparse products over blocks of items,
each pruned to its top-k before the next, so memory stays O(n_items * neighbors + one block). A 50k-item,
2M-interaction catalogue takes ~4 s and ~0.5 GB on 2 cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.base import InteractionData, Recommender

WEIGHTINGS = ("none", "tfidf", "bm25")
# Items per similarity block = BLOCK_CELLS // n_items: bounds a block's sparse product (~30 bytes a stored
# cell with its temporaries) to ~240 MB even when every pair of items co-occurs.
BLOCK_CELLS = 8_000_000


class ItemKNN(Recommender):
    """Item-item neighbourhood model on a pruned, shrunk cosine similarity.

    ``neighbors``: similar items kept per item; ``shrink``: added to the cosine denominator;
    ``binarize``: use 0/1 instead of interaction counts (for the similarity and the scored history);
    ``weighting``: re-weight users before the similarity, ``"tfidf"``/``"bm25"`` damp heavy users
    (their co-occurrences say less); ``exponent``: similarities are raised to this power after pruning,
    values > 1 sharpen towards the closest neighbours (Aiolli's locality ``q``). Interaction weights are
    assumed non-negative, as similarities then are. Defaults come from a small grid on ML-100k: TF-IDF
    adds ~0.01 nDCG@10 over plain cosine, 200 neighbours ~0.01 over 100; shrink and exponent matter little.
    """

    name = "itemknn"

    def __init__(
        self,
        neighbors: int = 200,
        shrink: float = 10.0,
        binarize: bool = True,
        weighting: str = "tfidf",
        exponent: float = 1.0,
    ) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"ItemKNN: weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if neighbors < 1 or shrink < 0 or exponent <= 0:
            raise ValueError("ItemKNN: need neighbors >= 1, shrink >= 0 and exponent > 0")
        super().__init__(
            neighbors=neighbors, shrink=shrink, binarize=binarize, weighting=weighting, exponent=exponent
        )
        self.neighbors = int(neighbors)
        self.shrink = float(shrink)
        self.binarize = binarize
        self.weighting = weighting
        self.exponent = float(exponent)
        self.similarity_: sp.csr_matrix | None = None  # (n_items, n_items): column j holds j's neighbours
        self.user_matrix_: sp.csr_matrix | None = None  # training history that gets scored

    def fit(self, data: InteractionData) -> ItemKNN:
        matrix = sp.csr_matrix(data.matrix, dtype=np.float32)
        matrix.eliminate_zeros()
        if self.binarize:
            matrix = (matrix > 0).astype(np.float32)
        self.user_matrix_ = matrix
        similarity = item_similarity(weight_users(matrix, self.weighting), self.neighbors, self.shrink)
        if self.exponent != 1.0:
            similarity.data **= self.exponent
        self.similarity_ = similarity
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if self.similarity_ is None:
            raise RuntimeError("ItemKNN.score called before fit")
        scores = self.user_matrix_[np.asarray(user_idx)] @ self.similarity_
        return np.asarray(scores.toarray(), dtype=np.float32)

    def _save_state(self, path: Path) -> None:
        sp.save_npz(path / "similarity.npz", self.similarity_)
        sp.save_npz(path / "user_matrix.npz", self.user_matrix_)

    def _load_state(self, path: Path) -> None:
        self.similarity_ = sp.load_npz(path / "similarity.npz").tocsr()
        self.user_matrix_ = sp.load_npz(path / "user_matrix.npz").tocsr()

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "neighbors": trial.suggest_int("neighbors", 20, 1000, log=True),
            "shrink": trial.suggest_float("shrink", 0.0, 500.0),
            "binarize": trial.suggest_categorical("binarize", [True, False]),
            "weighting": trial.suggest_categorical("weighting", list(WEIGHTINGS)),
            "exponent": trial.suggest_float("exponent", 0.5, 2.0),
        }


def weight_users(matrix: sp.csr_matrix, weighting: str, k1: float = 1.2, b: float = 0.75) -> sp.csr_matrix:
    """Re-weight a user x item matrix before computing item similarities (users are the item features).

    ``tfidf``: sqrt(weight) * idf(user); ``bm25``: Okapi BM25 saturation with item-length normalisation,
    times idf(user). ``idf(u) = log(n_items / (1 + items of u))``, clipped at 0.
    """
    if weighting == "none":
        return matrix
    matrix = sp.coo_matrix(matrix, dtype=np.float32)
    items_per_user = np.bincount(matrix.row, minlength=matrix.shape[0])
    idf = np.maximum(np.log(matrix.shape[1] / (1.0 + items_per_user)), 0.0).astype(np.float32)
    if weighting == "tfidf":
        data = np.sqrt(matrix.data) * idf[matrix.row]
    else:
        item_length = np.asarray(matrix.sum(axis=0), dtype=np.float32).ravel()
        length_norm = (1.0 - b) + b * item_length / max(float(item_length.mean()), 1e-12)
        data = matrix.data * (k1 + 1.0) / (k1 * length_norm[matrix.col] + matrix.data) * idf[matrix.row]
    weighted = sp.csr_matrix((data.astype(np.float32), (matrix.row, matrix.col)), shape=matrix.shape)
    weighted.eliminate_zeros()
    return weighted


def item_similarity(
    matrix: sp.csr_matrix, neighbors: int, shrink: float, block_size: int | None = None
) -> sp.csr_matrix:
    """Shrunk cosine between the columns of ``matrix`` (users x items), top ``neighbors`` per column.

    Returns an item x item float32 CSR ``S`` with zero diagonal where column ``j`` holds the similarities
    of j's nearest items, so ``history @ S`` scores every item. Blocks of ``block_size`` items (default:
    ``BLOCK_CELLS // n_items``) bound the memory; the result does not depend on the block size.
    """
    n_items = matrix.shape[1]
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    items = matrix.T.tocsr()  # items x users
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0), dtype=np.float32).ravel())
    if block_size is None:
        block_size = max(1, BLOCK_CELLS // max(n_items, 1))
    neighbours, targets, values = [], [], []
    for start in range(0, n_items, block_size):
        block = _similarity_block(items[start : start + block_size], matrix, norms, start, shrink)
        rows, cols, vals = _top_k_per_row(block, neighbors)
        neighbours.append(cols)
        targets.append(rows + start)
        values.append(vals)
    rows, cols, vals = (np.concatenate(part) for part in (neighbours, targets, values))
    similarity = sp.csr_matrix((vals, (rows, cols)), shape=(n_items, n_items), dtype=np.float32)
    similarity.sort_indices()
    return similarity


def _similarity_block(
    block_items: sp.csr_matrix, matrix: sp.csr_matrix, norms: np.ndarray, start: int, shrink: float
) -> sp.csr_matrix:
    """Sparse (block, n_items) shrunk cosine of the block's items (rows) against every item.

    Self-similarity and zero entries are dropped. Cosine is symmetric, so row ``r`` is also column
    ``start + r`` of the full similarity.
    """
    dots = sp.csr_matrix(block_items @ matrix, dtype=np.float32)
    rows = np.repeat(np.arange(dots.shape[0]), np.diff(dots.indptr))
    denominator = norms[start + rows] * norms[dots.indices] + shrink
    # 0/0 only for items nobody interacted with (and no shrink): their dot products are 0 too
    np.divide(dots.data, denominator, out=dots.data, where=denominator > 0)
    dots.data[dots.indices == start + rows] = 0.0
    dots.eliminate_zeros()
    return dots


def _top_k_per_row(block: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and value of the ``k`` largest entries of each row of a sparse ``block``.

    Rows with at most ``k`` entries are kept whole; longer ones are partitioned one by one over their
    stored entries only, so the cost follows the non-zeros, not rows x n_items (a dense ``argpartition``
    is also ~15x slower on rows of tied zeros).
    """
    lengths = np.diff(block.indptr)
    keep = np.repeat(lengths <= k, lengths)
    for row in np.flatnonzero(lengths > k):
        start, stop = block.indptr[row], block.indptr[row + 1]
        keep[start + np.argpartition(block.data[start:stop], stop - start - k)[-k:]] = True
    rows = np.repeat(np.arange(block.shape[0]), lengths)
    return rows[keep], block.indices[keep], block.data[keep]
