"""BPR-MF (Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009).

Matrix factorisation trained by SGD on sampled (user, seen item, unseen item) triples to rank the seen item
higher, via ``implicit``'s CPU implementation. implicit appends an item-bias column to the factors (and a
constant 1 to every user), so the exported model is ``score = users @ items.T + item_bias``, plain numpy.

implicit draws negatives in proportion to item popularity (it samples an entry of the CSR matrix), which on
popularity-heavy data such as MovieLens costs ~0.05 nDCG@10 against Rendle's uniform sampling.
``uniform_negatives`` mixes uniform negatives back in: it appends "sampling users" who interacted with every
item. Their entries are drawn as negatives for real users but never train anything: any negative drawn for
them is an item they have seen, and implicit skips those samples. Every sampling row costs one skipped
sample per item per epoch, so a share ``s`` multiplies the epoch time by ~``1 / (1 - s)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.base import InteractionData, Recommender

# implicit's SGD is Hogwild: with 2 threads two fits with one seed already differ (measured), so train on one.
NUM_THREADS = 1


class BPR(Recommender):
    """Pairwise-ranking matrix factorisation.

    ``factors``: latent dimension (plus the item bias); ``learning_rate``/``regularization``: SGD step and
    L2 penalty; ``iterations``: epochs of ``nnz`` samples each; ``uniform_negatives``: share of negatives
    drawn uniformly over the catalogue, the rest popularity-proportional (see module doc).
    Users without interactions score by the item bias alone. Defaults from a small grid on ML-100k:
    nDCG@10 0.42 (share 0.9 reaches 0.435 at twice the time; 0.0 peaks at 0.38 after ~50 epochs, then
    overfits); larger learning rates were worse.
    """

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.001,
        iterations: int = 100,
        uniform_negatives: float = 0.8,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= uniform_negatives < 1.0:
            raise ValueError(f"BPR: uniform_negatives must be in [0, 1), got {uniform_negatives}")
        super().__init__(
            factors=factors,
            learning_rate=learning_rate,
            regularization=regularization,
            iterations=iterations,
            uniform_negatives=uniform_negatives,
            seed=seed,
        )
        self.factors = int(factors)
        self.learning_rate = float(learning_rate)
        self.regularization = float(regularization)
        self.iterations = int(iterations)
        self.uniform_negatives = float(uniform_negatives)
        self.seed = int(seed)
        self.user_factors_: np.ndarray | None = None  # (n_users, factors) float32
        self.item_factors_: np.ndarray | None = None  # (n_items, factors) float32
        self.item_bias_: np.ndarray | None = None  # (n_items,) float32

    def fit(self, data: InteractionData) -> BPR:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        n_users = data.n_users
        model = BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            num_threads=NUM_THREADS,
            verify_negative_samples=True,  # also what keeps the sampling users from training
            random_state=self.seed,
        )

        def on_epoch(epoch: int, *_progress: Any) -> None:
            # views into implicit's arrays, which it updates in place: live, and no copy per epoch
            self._export(model.user_factors[:n_users], model.item_factors)
            self.report_epoch(epoch)

        model.fit(
            sampling_matrix(data.matrix, self.uniform_negatives), show_progress=False, callback=on_epoch
        )
        self._export(model.user_factors[:n_users], model.item_factors)
        self.user_factors_, self.item_factors_, self.item_bias_ = (
            np.ascontiguousarray(array, dtype=np.float32)
            for array in (self.user_factors_, self.item_factors_, self.item_bias_)
        )
        return self

    def _export(self, users: np.ndarray, items: np.ndarray) -> None:
        """Split implicit's ``[factors | 1]`` users and ``[factors | bias]`` items."""
        self.user_factors_, self.item_factors_, self.item_bias_ = users[:, :-1], items[:, :-1], items[:, -1]

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if self.user_factors_ is None:
            raise RuntimeError("BPR.score called before fit")
        scores = self.user_factors_[np.asarray(user_idx)] @ self.item_factors_.T
        scores += self.item_bias_
        return scores

    def _save_state(self, path: Path) -> None:
        np.save(path / "user_factors.npy", self.user_factors_)
        np.save(path / "item_factors.npy", self.item_factors_)
        np.save(path / "item_bias.npy", self.item_bias_)

    def _load_state(self, path: Path) -> None:
        self.user_factors_ = np.load(path / "user_factors.npy")
        self.item_factors_ = np.load(path / "item_factors.npy")
        self.item_bias_ = np.load(path / "item_bias.npy")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "factors": trial.suggest_categorical("factors", [32, 64, 128, 256]),
            "learning_rate": trial.suggest_float("learning_rate", 1e-3, 5e-2, log=True),
            "regularization": trial.suggest_float("regularization", 1e-4, 1e-1, log=True),
            "iterations": trial.suggest_int("iterations", 20, 200, log=True),
            "uniform_negatives": trial.suggest_categorical("uniform_negatives", [0.0, 0.5, 0.8]),
        }


def sampling_matrix(matrix: sp.csr_matrix, uniform_negatives: float) -> sp.csr_matrix:
    """The user x item CSR implicit trains on: the positive cells of ``matrix`` (values ignored), plus
    enough all-items rows that a share ``uniform_negatives`` of its entries are uniform over the items.
    """
    positives = sp.csr_matrix(matrix > 0, dtype=np.float32)
    n_items = positives.shape[1]
    share = uniform_negatives / (1.0 - uniform_negatives)
    n_rows = max(1, round(share * positives.nnz / max(n_items, 1))) if uniform_negatives > 0 else 0
    if n_rows == 0:
        positives.sort_indices()
        return positives
    everything = sp.csr_matrix(
        (
            np.ones(n_rows * n_items, dtype=np.float32),
            np.tile(np.arange(n_items, dtype=positives.indices.dtype), n_rows),
            np.arange(0, (n_rows + 1) * n_items, n_items),
        ),
        shape=(n_rows, n_items),
    )
    stacked = sp.vstack([positives, everything], format="csr")
    stacked.sort_indices()
    return stacked
