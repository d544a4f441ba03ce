"""The TensorFlow/Keras half of the two-tower model: towers, in-batch softmax, and the training loop.

Imported only by ``TwoTower.fit``, so loading or scoring a saved two-tower never starts TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

# Quiet TF's C++ logs; oneDNN off keeps CPU results reproducible run to run (and silences its banner).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.two_tower import item_log_probs  # noqa: E402


def train_towers(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    user_features: np.ndarray | None,
    item_features: np.ndarray | None,
    *,
    embedding_dim: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    temperature: float,
    seed: int,
    on_epoch: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Train on observed (user, item) index pairs.

    Returns the unit-norm user and item embedding matrices and the item tower's feature projection kernel
    (n_item_features, dim), or None without item features: it embeds new items that have no id embedding.
    ``on_epoch(epoch, user_embeddings, item_embeddings)`` is called after each epoch when given."""
    keras.utils.set_random_seed(seed)  # python, numpy and TF global seeds
    user_tower = Tower(n_users, embedding_dim, user_features, seed, name="user_tower")
    item_tower = Tower(n_items, embedding_dim, item_features, seed + 1, name="item_tower")
    model = InBatchSoftmax(user_tower, item_tower, item_log_probs(items, n_items), temperature)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=in_batch_loss)
    dummy = np.zeros(len(users), dtype=np.int32)  # the in-batch loss makes its own labels
    batches = (
        tf.data.Dataset.from_tensor_slices(((users, items), dummy))
        .shuffle(len(users), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
    )

    def export() -> tuple[np.ndarray, np.ndarray]:
        return (
            user_tower(np.arange(n_users, dtype=np.int32)).numpy(),
            item_tower(np.arange(n_items, dtype=np.int32)).numpy(),
        )

    callbacks = []
    if on_epoch is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, _: on_epoch(epoch, *export()))
        )
    model.fit(batches, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
    return *export(), item_tower.projection_kernel()


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

    def projection_kernel(self) -> np.ndarray | None:
        """The feature projection's (n_features, dim) kernel as float32 numpy, or None without features."""
        if self.projection is None:
            return None
        return np.asarray(keras.ops.convert_to_numpy(self.projection.kernel), dtype=np.float32)

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
