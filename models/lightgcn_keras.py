"""The TensorFlow half of LightGCN: graph propagation, BPR with sampled negatives, and the training loop.

Imported only by ``LightGCN.fit``, so loading or scoring a saved LightGCN never starts TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

# Quiet TF's C++ logs; oneDNN off keeps CPU results reproducible run to run (and silences its banner).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.sampling import observed_pairs, sample_unseen  # noqa: E402


class LightGCNNetwork(keras.Model):
    """One embedding table for users and items (users first); the final embeddings are the mean of the
    ego layer and ``layers`` rounds of propagation over the symmetrically normalised bipartite graph."""

    def __init__(self, adjacency: sp.csr_matrix, n_users: int, dim: int, layers: int, seed: int) -> None:
        super().__init__()
        self.n_users = n_users
        self.n_layers = layers
        self.multiply = symmetric_matmul(adjacency)
        self.ego = self.add_weight(
            shape=(adjacency.shape[0], dim),
            initializer=keras.initializers.RandomNormal(stddev=0.1, seed=seed),
            name="ego_embeddings",
        )

    def propagate(self) -> tf.Tensor:
        """(n_users + n_items, dim) final embeddings: mean of E_0 .. E_L with E_k = A_hat E_{k-1}."""
        layer = tf.convert_to_tensor(self.ego)
        total = layer
        for _ in range(self.n_layers):
            layer = self.multiply(layer)
            total += layer
        return total / float(self.n_layers + 1)

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """The final user and item embeddings as float32 numpy matrices."""
        final = self.propagate().numpy().astype(np.float32)
        return final[: self.n_users], final[self.n_users :]


def symmetric_matmul(adjacency: sp.csr_matrix) -> Callable[[tf.Tensor], tf.Tensor]:
    """``x -> A x`` for a symmetric sparse ``A``, differentiable, fast and deterministic on CPU.

    TF's CSR kernel is ~7x faster than ``tf.sparse.sparse_dense_matmul`` here, but its own gradient
    (``A^T g`` by scattering, multi-threaded) is not reproducible run to run. ``A`` is symmetric, so the
    gradient is ``A g``: the same row-parallel forward kernel, which sums each row in a fixed order.
    Falls back to ``sparse_dense_matmul`` if TF's (internal) CSR module is missing.
    """
    coo = adjacency.tocoo()
    sparse = tf.sparse.reorder(
        tf.sparse.SparseTensor(
            np.stack([coo.row, coo.col], axis=1).astype(np.int64), coo.data.astype(np.float32), coo.shape
        )
    )
    try:
        from tensorflow.python.ops.linalg.sparse import sparse_csr_matrix_ops as csr
    except ImportError:  # pragma: no cover - depends on the TF build
        return lambda x: tf.sparse.sparse_dense_matmul(sparse, x)
    matrix = csr.CSRSparseMatrix(sparse)

    @tf.custom_gradient
    def multiply(x: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
        return csr.matmul(matrix, x), lambda upstream: csr.matmul(matrix, upstream)

    return multiply


def normalized_adjacency(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` of the bipartite graph ``A = [[0, R], [R^T, 0]]`` with binary ``R``
    (isolated users/items keep a zero row)."""
    binary = sp.csr_matrix((matrix > 0).astype(np.float32))
    adjacency = sp.bmat([[None, binary], [binary.T, None]], format="csr", dtype=np.float32)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0).astype(np.float32)
    scale = sp.diags(inv_sqrt)
    return sp.csr_matrix(scale @ adjacency @ scale, dtype=np.float32)


def train_lightgcn(
    matrix: sp.csr_matrix,
    *,
    embedding_dim: int,
    layers: int,
    learning_rate: float,
    l2: float,
    epochs: int,
    batch_size: int,
    seed: int,
    on_epoch_end: Callable[[int, LightGCNNetwork], None],
) -> LightGCNNetwork:
    """BPR on (user, positive, sampled unseen negative) triples, one negative per positive, fresh each epoch.

    The L2 penalty acts on the batch's ego (layer-0) embeddings, averaged over the batch, as in the paper."""
    keras.utils.set_random_seed(seed)  # python, numpy and TF global seeds
    rng = np.random.default_rng(seed)
    n_users, n_items = matrix.shape
    users, items, seen = observed_pairs(matrix)
    network = LightGCNNetwork(normalized_adjacency(matrix), n_users, embedding_dim, layers, seed)
    optimizer = keras.optimizers.Adam(learning_rate)
    step = _train_step(network, optimizer, n_users, l2)
    for epoch in range(epochs):
        negatives = sample_unseen(users, seen, n_items, rng)
        order = rng.permutation(len(users))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            step(
                tf.constant(users[batch], dtype=tf.int32),
                tf.constant(items[batch], dtype=tf.int32),
                tf.constant(negatives[batch], dtype=tf.int32),
            )
        on_epoch_end(epoch, network)
    return network


def _train_step(
    network: LightGCNNetwork, optimizer: keras.optimizers.Optimizer, n_users: int, l2: float
) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]:
    @tf.function(reduce_retracing=True)
    def step(users: tf.Tensor, positives: tf.Tensor, negatives: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            final = network.propagate()
            user_vec = tf.gather(final, users)
            pos_vec = tf.gather(final, positives + n_users)
            neg_vec = tf.gather(final, negatives + n_users)
            margin = tf.reduce_sum(user_vec * (pos_vec - neg_vec), axis=1)
            loss = tf.reduce_mean(tf.nn.softplus(-margin))  # -log sigmoid(margin)
            if l2 > 0:
                ego = tf.gather(network.ego, tf.concat([users, positives + n_users, negatives + n_users], 0))
                loss += l2 * 0.5 * tf.reduce_sum(ego * ego) / tf.cast(tf.shape(users)[0], tf.float32)
        gradients = tape.gradient(loss, network.trainable_variables)
        optimizer.apply_gradients(zip(gradients, network.trainable_variables, strict=True))
        return loss

    return step
