"""Two-tower retrieval model in TensorFlow/Keras, trained with an in-batch sampled softmax.

User tower: user-id embedding (+ a linear projection of the user side features); item tower likewise.
Both outputs are L2-normalised and a pair scores ``dot(u, v) / temperature``. Each batch of observed
(user, item) pairs uses the other items of the batch as negatives; because those are drawn in proportion to
popularity, the logits get the logQ correction (Yi et al., RecSys 2019) so the model estimates the full
softmax instead of learning to demote popular items.

After ``fit`` the final user and item embeddings are exported as numpy matrices: scoring, saving and loading
need no TensorFlow. So is the item tower's feature projection: a brand-new item with side features but no
id embedding (cold start) is embedded as ``normalize(features @ kernel)`` — its id part taken as zero — and
scored against the known users (``embed_new_items``/``score_new_items``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.base import InteractionData, Recommender


def item_log_probs(items: np.ndarray, n_items: int) -> np.ndarray:
    """log of each item's share of the training pairs (add-one smoothed): its in-batch sampling probability,
    the logQ correction of the in-batch softmax."""
    counts = np.bincount(items, minlength=n_items).astype(np.float64) + 1.0
    return np.log(counts / counts.sum())


class TwoTower(Recommender):
    """Dual-encoder recommender; ``score`` is the dot product of the exported user and item embeddings."""

    name = "two_tower"

    def __init__(
        self,
        embedding_dim: int = 64,
        epochs: int = 10,
        batch_size: int = 512,
        learning_rate: float = 0.005,
        temperature: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__(
            embedding_dim=embedding_dim,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            temperature=temperature,
            seed=seed,
        )
        self.embedding_dim = int(embedding_dim)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.temperature = float(temperature)
        self.seed = int(seed)
        self.user_embeddings_: np.ndarray | None = None  # (n_users, dim) float32, unit rows
        self.item_embeddings_: np.ndarray | None = None  # (n_items, dim) float32, unit rows
        self.item_projection_: np.ndarray | None = None  # (n_item_features, dim) float32, None w/o features

    def fit(self, data: InteractionData) -> TwoTower:
        from models.two_tower_keras import train_towers  # TensorFlow loads here, for training only

        pairs = data.matrix.tocoo()
        keep = pairs.data > 0
        users, items = pairs.row[keep].astype(np.int32), pairs.col[keep].astype(np.int32)

        def on_epoch(epoch: int, user_embeddings: np.ndarray, item_embeddings: np.ndarray) -> None:
            self.user_embeddings_, self.item_embeddings_ = user_embeddings, item_embeddings
            self.report_epoch(epoch)

        self.user_embeddings_, self.item_embeddings_, self.item_projection_ = train_towers(
            users,
            items,
            data.n_users,
            data.n_items,
            data.user_features,
            data.item_features,
            embedding_dim=self.embedding_dim,
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            temperature=self.temperature,
            seed=self.seed,
            on_epoch=on_epoch if self.epoch_callback is not None else None,
        )
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if self.user_embeddings_ is None:
            raise RuntimeError("TwoTower.score called before fit")
        return self.user_embeddings_[np.asarray(user_idx)] @ self.item_embeddings_.T

    def embed_new_items(self, item_features: np.ndarray) -> np.ndarray:
        """Unit-norm item-tower embeddings (n, dim) of new items from their side features alone.

        ``item_features`` rows have the columns the model was fitted with; an all-zero projection stays 0."""
        if self.user_embeddings_ is None:
            raise RuntimeError("TwoTower.embed_new_items called before fit")
        if self.item_projection_ is None:
            raise ValueError("TwoTower was fitted without item features: new items cannot be embedded")
        features = np.atleast_2d(np.asarray(item_features, dtype=np.float32))
        if features.shape[1] != self.item_projection_.shape[0]:
            raise ValueError(
                f"TwoTower: expected {self.item_projection_.shape[0]} item features, got {features.shape[1]}"
            )
        vectors = features @ self.item_projection_
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def score_new_items(self, user_idx: np.ndarray, item_features: np.ndarray) -> np.ndarray:
        """Scores of new items (from their side features) for the given users: (len(user_idx), n_new)."""
        return self.user_embeddings_[np.asarray(user_idx)] @ self.embed_new_items(item_features).T

    def _save_state(self, path: Path) -> None:
        np.save(path / "user_embeddings.npy", self.user_embeddings_)
        np.save(path / "item_embeddings.npy", self.item_embeddings_)
        if self.item_projection_ is not None:
            np.save(path / "item_projection.npy", self.item_projection_)

    def _load_state(self, path: Path) -> None:
        self.user_embeddings_ = np.load(path / "user_embeddings.npy")
        self.item_embeddings_ = np.load(path / "item_embeddings.npy")
        projection = path / "item_projection.npy"  # absent when fitted without item features
        self.item_projection_ = np.load(projection) if projection.exists() else None

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "epochs": trial.suggest_int("epochs", 5, 20),
            "learning_rate": trial.suggest_float("learning_rate", 1e-3, 2e-2, log=True),
            "temperature": trial.suggest_float("temperature", 0.05, 0.5, log=True),
        }
