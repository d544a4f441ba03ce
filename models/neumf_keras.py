"""The TensorFlow/Keras half of NeuMF: the two-branch network, negative sampling and the training loop.

Imported only by ``NeuMF.fit``, so loading or scoring a saved NeuMF never starts TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

# Quiet TF's C++ logs; oneDNN off keeps CPU results reproducible run to run (and silences its banner).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.sampling import observed_pairs, sample_unseen  # noqa: E402


class NeuMFNetwork(keras.Model):
    """GMF (element-wise product of user/item factors) and an MLP over the concatenated user/item
    embeddings; both outputs are concatenated into one linear unit. ``call`` returns the logit: the
    sigmoid lives in the loss (numerically safer) and scores stay unsaturated for ranking.
    """

    def __init__(
        self, n_users: int, n_items: int, factors: int, mlp_layers: Sequence[int], seed: int
    ) -> None:
        super().__init__()

        def embedding(n: int, dim: int, name: str, offset: int) -> keras.layers.Embedding:
            init = keras.initializers.RandomNormal(stddev=0.01, seed=seed + offset)
            return keras.layers.Embedding(n, dim, embeddings_initializer=init, name=name)

        # The MLP's input is [user ; item], each half of the first layer's width (as in He et al.).
        half = max(1, mlp_layers[0] // 2)
        self.user_gmf = embedding(n_users, factors, "user_gmf", 0)
        self.item_gmf = embedding(n_items, factors, "item_gmf", 1)
        self.user_mlp = embedding(n_users, half, "user_mlp", 2)
        self.item_mlp = embedding(n_items, half, "item_mlp", 3)
        self.hidden = [
            keras.layers.Dense(
                width,
                activation="relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed + 10 + k),
                name=f"mlp_{k}",
            )
            for k, width in enumerate(mlp_layers[1:])
        ]
        self.output_layer = keras.layers.Dense(
            1, kernel_initializer=keras.initializers.LecunUniform(seed + 4), name="output"
        )

    def call(self, inputs: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        users, items = inputs
        hidden = tf.concat([self.user_mlp(users), self.item_mlp(items)], axis=-1)
        for layer in self.hidden:
            hidden = layer(hidden)
        gmf = self.user_gmf(users) * self.item_gmf(items)
        return tf.squeeze(self.output_layer(tf.concat([gmf, hidden], axis=-1)), -1)

    def penalty(self, users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """Mean squared norm of the embeddings a batch looks up (a full-table penalty would be slow)."""
        tables = [
            (self.user_gmf, users),
            (self.item_gmf, items),
            (self.user_mlp, users),
            (self.item_mlp, items),
        ]
        return tf.add_n([tf.reduce_mean(tf.reduce_sum(table(idx) ** 2, -1)) for table, idx in tables])


def train_neumf(
    matrix: sp.csr_matrix,
    *,
    factors: int,
    mlp_layers: Sequence[int],
    learning_rate: float,
    negatives: int,
    epochs: int,
    batch_size: int,
    l2: float,
    seed: int,
    on_epoch_end: Callable[[int, NeuMFNetwork], None],
) -> NeuMFNetwork:
    """Fit on the positives of ``matrix`` with ``negatives`` fresh unseen items per positive each epoch."""
    keras.utils.set_random_seed(seed)  # python, numpy and TF global seeds
    rng = np.random.default_rng(seed)
    n_users, n_items = matrix.shape
    users, items, seen = observed_pairs(matrix)
    network = NeuMFNetwork(n_users, n_items, factors, mlp_layers, seed)
    network((np.zeros(1, np.int32), np.zeros(1, np.int32)))  # build the weights
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function(reduce_retracing=True)
    def train_step(batch_users: tf.Tensor, batch_items: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = network((batch_users, batch_items), training=True)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
            if l2 > 0:
                loss += l2 * network.penalty(batch_users, batch_items)
        gradients = tape.gradient(loss, network.trainable_variables)
        optimizer.apply_gradients(zip(gradients, network.trainable_variables, strict=True))
        return loss

    for epoch in range(epochs):
        epoch_users, epoch_items, labels = training_pairs(users, items, seen, n_items, negatives, rng)
        for start in range(0, len(labels), batch_size):
            rows = slice(start, start + batch_size)
            train_step(epoch_users[rows], epoch_items[rows], labels[rows])
        on_epoch_end(epoch, network)
    return network


def training_pairs(
    users: np.ndarray,
    items: np.ndarray,
    seen: np.ndarray,
    n_items: int,
    negatives: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The positives plus ``negatives`` uniformly drawn unseen items per positive, shuffled together."""
    neg_users = np.repeat(users, negatives)
    neg_items = sample_unseen(neg_users, seen, n_items, rng)
    all_users = np.concatenate([users, neg_users]).astype(np.int32)
    all_items = np.concatenate([items, neg_items]).astype(np.int32)
    labels = np.concatenate([np.ones(len(users)), np.zeros(len(neg_users))]).astype(np.float32)
    order = rng.permutation(len(labels))
    return all_users[order], all_items[order], labels[order]


def export_weights(network: NeuMFNetwork) -> dict[str, np.ndarray]:
    """The trained network as float32 numpy arrays: the four embedding tables, the MLP layers and the
    output unit, its kernel split into the GMF part and the MLP part."""
    factors = network.user_gmf.output_dim
    output_kernel = keras.ops.convert_to_numpy(network.output_layer.kernel)[:, 0]
    weights = {
        "user_gmf": network.user_gmf.embeddings,
        "item_gmf": network.item_gmf.embeddings,
        "user_mlp": network.user_mlp.embeddings,
        "item_mlp": network.item_mlp.embeddings,
        "output_gmf": output_kernel[:factors],
        "output_mlp": output_kernel[factors:],
        "output_bias": network.output_layer.bias,
    }
    for k, layer in enumerate(network.hidden):
        weights[f"mlp_kernel_{k}"] = layer.kernel
        weights[f"mlp_bias_{k}"] = layer.bias
    return {
        name: np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float32)
        for name, value in weights.items()
    }
