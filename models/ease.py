"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

Closed form: ``B = I - P / diag(P)`` with ``P = (X^T X + l2 I)^-1`` and ``diag(B) = 0``; scores are ``X B``.
The item x item inverse costs O(n^3) time and n^2 memory, so only items with at least ``min_count`` users,
at most the ``max_items`` most popular of them, get a learned column; the other items score 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from models.base import InteractionData, Recommender


class EASE(Recommender):
    """Item-item linear autoencoder with a closed-form solution.

    ``l2``: ridge penalty (larger = smoother, more popularity); ``binarize``: fit on 0/1 instead of the
    interaction weights; ``min_count``/``max_items``: which items get a column in ``B`` (see module doc).
    """

    name = "ease"

    def __init__(
        self, l2: float = 500.0, binarize: bool = True, min_count: int = 1, max_items: int = 8000
    ) -> None:
        if l2 <= 0:
            raise ValueError(f"EASE: l2 must be > 0 (the ridge keeps X^T X + l2*I invertible), got {l2}")
        super().__init__(l2=l2, binarize=binarize, min_count=min_count, max_items=max_items)
        self.l2 = float(l2)
        self.binarize = binarize
        self.min_count = int(min_count)
        self.max_items = int(max_items)
        self.weights_: np.ndarray | None = None  # B restricted to the kept items, (k, k) float32
        self.kept_items_: np.ndarray | None = None  # item indices of B's rows/columns
        self.user_matrix_: sp.csr_matrix | None = None  # training history X restricted to kept items
        self.n_items_: int = 0

    def fit(self, data: InteractionData) -> EASE:
        matrix = sp.csr_matrix(data.matrix, dtype=np.float32)
        if self.binarize:
            matrix = (matrix > 0).astype(np.float32)
        self.n_items_ = matrix.shape[1]
        self.kept_items_ = select_items(
            np.asarray((matrix > 0).sum(axis=0)).ravel(), self.min_count, self.max_items
        )
        self.user_matrix_ = matrix[:, self.kept_items_].tocsr()
        self.weights_ = ease_weights(self.user_matrix_, self.l2)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if self.weights_ is None:
            raise RuntimeError("EASE.score called before fit")
        kept_scores = np.asarray(self.user_matrix_[np.asarray(user_idx)] @ self.weights_, dtype=np.float32)
        if len(self.kept_items_) == self.n_items_:
            return kept_scores
        scores = np.zeros((kept_scores.shape[0], self.n_items_), dtype=np.float32)
        scores[:, self.kept_items_] = kept_scores
        return scores

    def _save_state(self, path: Path) -> None:
        np.save(path / "weights.npy", self.weights_)
        np.save(path / "kept_items.npy", self.kept_items_)
        np.save(path / "n_items.npy", np.array(self.n_items_))
        sp.save_npz(path / "user_matrix.npz", self.user_matrix_)

    def _load_state(self, path: Path) -> None:
        self.weights_ = np.load(path / "weights.npy")
        self.kept_items_ = np.load(path / "kept_items.npy")
        self.n_items_ = int(np.load(path / "n_items.npy"))
        self.user_matrix_ = sp.load_npz(path / "user_matrix.npz").tocsr()

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "l2": trial.suggest_float("l2", 20.0, 3000.0, log=True),
            "binarize": trial.suggest_categorical("binarize", [True, False]),
        }


def select_items(user_counts: np.ndarray, min_count: int, max_items: int) -> np.ndarray:
    """Sorted indices of items with ``user_counts >= min_count``, capped to the ``max_items`` most popular."""
    eligible = np.flatnonzero(user_counts >= min_count)
    if len(eligible) > max_items:
        # stable sort: among equally popular items the lower index wins, so the choice is deterministic
        order = np.argsort(-user_counts[eligible], kind="stable")[:max_items]
        eligible = np.sort(eligible[order])
    return eligible


def ease_weights(matrix: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE item-item weights ``B`` (float32, zero diagonal) for a user x item matrix ``X``."""
    # Work in place on one n x n float32 buffer: at 14k items each extra copy is 0.8 GB.
    gram = np.asarray((matrix.T @ matrix).toarray(), dtype=np.float32)
    gram[np.diag_indices_from(gram)] += l2
    weights = _spd_inverse(gram)
    weights /= -np.diag(weights).copy()  # column j divided by -P_jj
    weights[np.diag_indices_from(weights)] = 0.0
    return weights


def _spd_inverse(matrix: np.ndarray, block: int = 1024) -> np.ndarray:
    """Inverse of a symmetric positive-definite matrix via Cholesky (~2-5x faster than a general inverse).

    Overwrites ``matrix``. Its transpose is the same matrix but Fortran-ordered, so LAPACK needs no copy.
    """
    potrf, potri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potri"), (matrix,))
    factor, info = potrf(matrix.T, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise ValueError(f"EASE: X^T X + l2*I is not positive definite (lapack info {info}); raise l2")
    inverse, info = potri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise ValueError(f"EASE: Cholesky inverse failed (lapack info {info})")
    # potri fills only the upper triangle; mirror it block by block to avoid n x n temporaries
    for start in range(0, inverse.shape[0], block):
        stop = start + block
        inverse[start:stop, :start] = inverse[:start, start:stop].T
        diagonal = inverse[start:stop, start:stop]
        diagonal[...] = np.triu(diagonal) + np.triu(diagonal, 1).T
    return inverse.T  # same symmetric matrix, C-ordered again: sparse @ dense scoring is faster on it
