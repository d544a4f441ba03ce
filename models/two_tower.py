"""Two-tower retrieval model in TensorFlow/Keras, trained with an in-batch sampled softmax.

User tower: user-id embedding (+ a linear projection of the user side features); item tower likewise.
Both outputs are L2-normalised and a pair scores ``dot(u, v) / temperature``. Each batch of observed
(user, item) pairs uses the other items of the batch as negatives; because those are drawn in proportion to
popularity, the logits get the logQ correction (Yi et al., RecSys 2019) so the model estimates the full
softmax instead of learning to demote popular items.

After ``fit`` the final user and item embeddings are exported as numpy matrices: scoring, saving and loading
need no TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from models.base import InteractionData, Recommender

# Quiet TF's C++ logs; oneDNN off keeps CPU results reproducible run to run (and silences its banner).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


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

    def fit(self, data: InteractionData) -> TwoTower:
        keras.utils.set_random_seed(self.seed)  # python, numpy and TF global seeds
        pairs = data.matrix.tocoo()
        keep = pairs.data > 0
        users, items = pairs.row[keep].astype(np.int32), pairs.col[keep].astype(np.int32)
        user_tower = Tower(data.n_users, self.embedding_dim, data.user_features, self.seed, name="user_tower")
        item_tower = Tower(
            data.n_items, self.embedding_dim, data.item_features, self.seed + 1, name="item_tower"
        )
        model = InBatchSoftmax(user_tower, item_tower, _item_log_probs(items, data.n_items), self.temperature)
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss=in_batch_loss)
        model.fit(self._dataset(users, items), epochs=self.epochs, shuffle=False, verbose=0)
        self.user_embeddings_ = user_tower(np.arange(data.n_users, dtype=np.int32)).numpy()
        self.item_embeddings_ = item_tower(np.arange(data.n_items, dtype=np.int32)).numpy()
        return self

    def _dataset(self, users: np.ndarray, items: np.ndarray) -> tf.data.Dataset:
        """Shuffled batches of ((user, item), dummy label); the in-batch loss makes its own labels."""
        dummy = np.zeros(len(users), dtype=np.int32)
        return (
            tf.data.Dataset.from_tensor_slices(((users, items), dummy))
            .shuffle(len(users), seed=self.seed, reshuffle_each_iteration=True)
            .batch(self.batch_size)
        )

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if self.user_embeddings_ is None:
            raise RuntimeError("TwoTower.score called before fit")
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
            "epochs": trial.suggest_int("epochs", 5, 20),
            "learning_rate": trial.suggest_float("learning_rate", 1e-3, 2e-2, log=True),
            "temperature": trial.suggest_float("temperature", 0.05, 0.5, log=True),
        }


class Tower(keras.layers.Layer):
    """Id embedding plus, when side features exist, their linear projection; output L2-normalised."""

    def __init__(self, n: int, dim: int, features: np.ndarray | None, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        init = keras.initializers.RandomNormal(stddev=0.05, seed=seed)
        self.embedding = keras.layers.Embedding(n, dim, embeddings_initializer=init, name="id_embedding")
        self.features = None if features is None else tf.constant(features, dtype=tf.float32)
        self.projection = (
            None
            if features is None
            else keras.layers.Dense(
                dim,
                use_bias=False,
                kernel_initializer=keras.initializers.GlorotUniform(seed),
                name="features",
            )
        )

    def call(self, idx: tf.Tensor) -> tf.Tensor:
        vectors = self.embedding(idx)
        if self.projection is not None:
            vectors = vectors + self.projection(tf.gather(self.features, idx))
        return tf.math.l2_normalize(vectors, axis=-1)


class InBatchSoftmax(keras.Model):
    """Training head: logits of every user in the batch against every item in the batch.

    Row ``r``'s positive is column ``r``. Columns holding the same item as the positive are masked (they are
    not negatives), and ``log q(item)`` is subtracted to undo the popularity-proportional sampling.
    """

    def __init__(
        self, user_tower: Tower, item_tower: Tower, item_log_probs: np.ndarray, temperature: float
    ) -> None:
        super().__init__()
        self.user_tower = user_tower
        self.item_tower = item_tower
        self.item_log_probs = tf.constant(item_log_probs, dtype=tf.float32)
        self.temperature = temperature

    def call(self, inputs: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        users, items = inputs
        logits = (
            tf.matmul(self.user_tower(users), self.item_tower(items), transpose_b=True) / self.temperature
        )
        logits -= tf.gather(self.item_log_probs, items)[tf.newaxis, :]
        duplicate = tf.equal(items[:, tf.newaxis], items[tf.newaxis, :])
        off_diagonal = tf.logical_not(tf.eye(tf.shape(items)[0], dtype=tf.bool))
        return tf.where(tf.logical_and(duplicate, off_diagonal), tf.float32.min / 2, logits)


def in_batch_loss(_labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy where each row's positive is on the diagonal."""
    targets = tf.range(tf.shape(logits)[0])
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def _item_log_probs(items: np.ndarray, n_items: int) -> np.ndarray:
    """log of each item's share of the training pairs (add-one smoothed): its in-batch sampling probability."""
    counts = np.bincount(items, minlength=n_items).astype(np.float64) + 1.0
    return np.log(counts / counts.sum()).astype(np.float32)
