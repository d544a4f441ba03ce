"""LightGCN (He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020), trained in TensorFlow, scored in numpy.

Users and items are nodes of the bipartite interaction graph. Their ego embeddings are propagated ``layers``
times over the symmetrically normalised adjacency ``D^-1/2 A D^-1/2`` with no weights and no non-linearity,
and the final embedding is the mean of all layers. Trained with BPR on each observed pair against one
uniformly sampled unseen item (fresh every epoch), L2 on the ego embeddings, Adam.

After ``fit`` the final user and item embeddings are exported as numpy matrices and a pair scores their dot
product, so scoring, saving and loading need no TensorFlow. A user or item with no interactions keeps only
its (random, shrunk) ego embedding, so its scores are small and arbitrary, never an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import InteractionData, Recommender

if TYPE_CHECKING:
    from models.lightgcn_keras import LightGCNNetwork


class LightGCN(Recommender):
    """Graph-propagated matrix factorisation; ``score`` is the dot product of the exported embeddings.

    ``embedding_dim``: size of each node's vector; ``layers``: propagation rounds; ``l2``: weight of the
    penalty on the batch's ego embeddings; ``batch_size``: BPR triples per Adam step.
    """

    name = "lightgcn"

    def __init__(
        self,
        embedding_dim: int = 64,
        layers: int = 3,
        learning_rate: float = 0.01,
        l2: float = 1e-3,
        epochs: int = 30,
        batch_size: int = 2048,
        seed: int = 0,
    ) -> None:
        if layers < 0:
            raise ValueError(f"LightGCN: layers must be >= 0, got {layers}")
        super().__init__(
            embedding_dim=embedding_dim,
            layers=layers,
            learning_rate=learning_rate,
            l2=l2,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
        )
        self.embedding_dim = int(embedding_dim)
        self.layers = int(layers)
        self.learning_rate = float(learning_rate)
        self.l2 = float(l2)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.user_embeddings_: np.ndarray | None = None  # (n_users, dim) float32
        self.item_embeddings_: np.ndarray | None = None  # (n_items, dim) float32

    def fit(self, data: InteractionData) -> LightGCN:
        from models import lightgcn_keras  # TensorFlow loads here, for training only

        def on_epoch_end(epoch: int, network: LightGCNNetwork) -> None:
            if self.epoch_callback is not None:  # exporting costs one propagation: only when someone listens
                self.user_embeddings_, self.item_embeddings_ = network.split()
            self.report_epoch(epoch)

        network = lightgcn_keras.train_lightgcn(
            data.matrix,
            embedding_dim=self.embedding_dim,
            layers=self.layers,
            learning_rate=self.learning_rate,
            l2=self.l2,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            on_epoch_end=on_epoch_end,
        )
        self.user_embeddings_, self.item_embeddings_ = network.split()
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if self.user_embeddings_ is None:
            raise RuntimeError("LightGCN.score called before fit")
        return self.user_embeddings_[np.asarray(user_idx)] @ self.item_embeddings_.T

    def _save_state(self, path: Path) -> None:
        np.save(path / "user_embeddings.npy", self.user_embeddings_)
        np.save(path / "item_embeddings.npy", self.item_embeddings_)

    def _load_state(self, path: Path) -> None:
        self.user_embeddings_ = np.load(path / "user_embeddings.npy")
        self.item_embeddings_ = np.load(path / "item_embeddings.npy")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "layers": trial.suggest_int("layers", 1, 4),
            "learning_rate": trial.suggest_float("learning_rate", 1e-3, 3e-2, log=True),
            "l2": trial.suggest_float("l2", 1e-6, 1e-2, log=True),
            "epochs": trial.suggest_int("epochs", 10, 60),
        }
