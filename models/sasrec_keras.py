"""The TensorFlow/Keras half of SASRec: the causal self-attention network, its losses and training loop.

Imported only by ``SASRec.fit``, so loading or scoring a saved SASRec never starts TensorFlow. The layers
are written out by hand (no ``keras.layers.MultiHeadAttention``) so that ``export_weights`` gives exactly the
arrays that the numpy forward pass in ``models.sasrec`` replays.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np

# Quiet TF's C++ logs; oneDNN off keeps CPU results reproducible run to run (and silences its banner).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.sasrec import LAYER_NORM_EPSILON, MASKED_LOGIT  # noqa: E402


class CausalBlock(keras.layers.Layer):
    """Pre-norm transformer block: x + attention(LN(x)), then x + feed-forward(LN(x)); padding zeroed."""

    def __init__(self, dim: int, heads: int, dropout: float, seed: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.heads = heads

        def dense(name: str, offset: int, activation: str | None = None) -> keras.layers.Dense:
            init = keras.initializers.GlorotUniform(seed + offset)
            return keras.layers.Dense(dim, activation=activation, kernel_initializer=init, name=name)

        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, name="attention_norm"
        )
        self.query, self.key, self.value = dense("query", 0), dense("key", 1), dense("value", 2)
        self.attention_out = dense("attention_out", 3)
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="ffn_norm")
        self.ffn_in, self.ffn_out = dense("ffn_in", 4, "relu"), dense("ffn_out", 5)
        self.dropout = keras.layers.Dropout(dropout, seed=seed + 6)

    def call(self, x: tf.Tensor, allowed: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        normed = self.attention_norm(x)
        queries, keys, values = (self._split(layer(normed)) for layer in (self.query, self.key, self.value))
        logits = tf.matmul(queries, keys, transpose_b=True) / math.sqrt(queries.shape[-1])
        logits = tf.where(allowed[:, tf.newaxis], logits, MASKED_LOGIT)
        attended = self._merge(tf.matmul(tf.nn.softmax(logits, axis=-1), values))
        x = x + self.dropout(self.attention_out(attended), training=training)
        hidden = self.dropout(self.ffn_in(self.ffn_norm(x)), training=training)
        x = x + self.dropout(self.ffn_out(hidden), training=training)
        return x * mask

    def _split(self, x: tf.Tensor) -> tf.Tensor:
        """(batch, length, dim) -> (batch, heads, length, dim / heads)."""
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, [batch, length, self.heads, x.shape[-1] // self.heads])
        return tf.transpose(x, [0, 2, 1, 3])

    def _merge(self, x: tf.Tensor) -> tf.Tensor:
        batch, length = tf.shape(x)[0], tf.shape(x)[2]
        return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [batch, length, self.heads * x.shape[-1]])


class SASRecNetwork(keras.Model):
    """Item + position embeddings, ``blocks`` causal blocks, a final layer norm. ``call`` maps left-padded
    sequences of item ids (0 = padding, item ``i`` is id ``i + 1``) to one hidden state per position; an
    item's logit is that state dotted with the item's (shared input/output) embedding."""

    def __init__(
        self, n_items: int, max_len: int, dim: int, blocks: int, heads: int, dropout: float, seed: int
    ) -> None:
        super().__init__()
        self.dim = dim
        init = keras.initializers.RandomNormal(stddev=dim**-0.5, seed=seed)
        self.item_embedding = keras.layers.Embedding(
            n_items + 1, dim, embeddings_initializer=init, name="item_embedding"
        )
        self.position_embedding = keras.layers.Embedding(
            max_len,
            dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02, seed=seed + 1),
            name="position_embedding",
        )
        self.dropout = keras.layers.Dropout(dropout, seed=seed + 2)
        self.blocks = [
            CausalBlock(dim, heads, dropout, seed + 10 * (k + 1), name=f"block_{k}") for k in range(blocks)
        ]
        self.final_norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="final_norm")

    def call(self, sequences: tf.Tensor, training: bool = False) -> tf.Tensor:
        length = tf.shape(sequences)[1]
        real = sequences > 0
        mask = tf.cast(real, tf.float32)[..., tf.newaxis]
        x = self.item_embedding(sequences) * math.sqrt(self.dim) + self.position_embedding(tf.range(length))
        x = self.dropout(x, training=training) * mask
        causal = tf.linalg.band_part(tf.ones([length, length], dtype=tf.bool), -1, 0)
        allowed = tf.logical_and(causal[tf.newaxis], real[:, tf.newaxis, :])  # (batch, query, key)
        for block in self.blocks:
            x = block(x, allowed, mask, training=training)
        return self.final_norm(x)


def train_sasrec(
    sequences: list[np.ndarray],
    n_items: int,
    *,
    max_len: int,
    hidden_dim: int,
    blocks: int,
    heads: int,
    dropout: float,
    loss: str,
    negatives: int,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    seed: int,
    on_epoch_end: Callable[[int, SASRecNetwork], None],
) -> SASRecNetwork:
    """Next-item training on windows of the users' item-index sequences (see ``training_windows``)."""
    keras.utils.set_random_seed(seed)  # python, numpy and TF global seeds
    rng = np.random.default_rng(seed)
    inputs, targets = training_windows(sequences, max_len)
    network = SASRecNetwork(n_items, max_len, hidden_dim, blocks, heads, dropout, seed)
    network(inputs[:1])  # build the weights
    optimizer = keras.optimizers.Adam(learning_rate)
    full_softmax = loss == "softmax" and not 0 < negatives < n_items
    objective = bce_loss if loss == "bce" else full_softmax_loss if full_softmax else softmax_loss

    @tf.function(reduce_retracing=True)
    def train_step(
        batch_inputs: tf.Tensor, batch_targets: tf.Tensor, batch_negatives: tf.Tensor
    ) -> tf.Tensor:
        with tf.GradientTape() as tape:
            hidden = network(batch_inputs, training=True)
            value = objective(hidden, batch_targets, batch_negatives, network.item_embedding.embeddings)
        gradients = tape.gradient(value, network.trainable_variables)
        optimizer.apply_gradients(zip(gradients, network.trainable_variables, strict=True))
        return value

    for epoch in range(epochs):
        order = rng.permutation(len(inputs))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            if loss == "bce":  # one uniformly drawn negative per position
                drawn = sample_negatives(targets[rows], n_items, rng)
            elif full_softmax:  # scores every item: nothing to draw
                drawn = np.zeros(1, dtype=np.int32)
            else:  # ``negatives`` shared by the whole batch
                drawn = rng.integers(1, n_items + 1, size=negatives).astype(np.int32)
            train_step(inputs[rows], targets[rows], drawn)
        on_epoch_end(epoch, network)
    return network


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded (input, target) id windows: each sequence, shifted to ids ``item + 1``, is cut from its
    end into consecutive pieces of ``max_len + 1`` ids overlapping by one, so every transition is trained
    once; input is a piece without its last id, target the piece without its first (0 = no target)."""
    inputs, targets = [], []
    for sequence in sequences:
        ids = np.asarray(sequence, dtype=np.int32) + 1
        for stop in range(len(ids), 1, -max_len):
            piece = ids[max(0, stop - max_len - 1) : stop]
            row_in, row_out = np.zeros(max_len, np.int32), np.zeros(max_len, np.int32)
            row_in[max_len - len(piece) + 1 :] = piece[:-1]
            row_out[max_len - len(piece) + 1 :] = piece[1:]
            inputs.append(row_in)
            targets.append(row_out)
    if not inputs:
        raise ValueError("SASRec: no user has two or more interactions to learn a next item from")
    return np.stack(inputs), np.stack(targets)


def sample_negatives(targets: np.ndarray, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform random item id per position, redrawn (a few times) where it equals the target."""
    drawn = rng.integers(1, n_items + 1, size=targets.shape).astype(np.int32)
    for _ in range(5):
        clash = drawn == targets
        if not clash.any():
            break
        drawn[clash] = rng.integers(1, n_items + 1, size=int(clash.sum()))
    return drawn


def bce_loss(hidden: tf.Tensor, targets: tf.Tensor, negatives: tf.Tensor, embeddings: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy of each position's target against its own sampled negative (Kang & McAuley)."""
    positive = tf.reduce_sum(hidden * tf.gather(embeddings, targets), -1)
    negative = tf.reduce_sum(hidden * tf.gather(embeddings, negatives), -1)
    losses = tf.nn.softplus(-positive) + tf.nn.softplus(negative)  # -log s(pos) - log(1 - s(neg))
    return _mean_over_targets(losses, targets)


def softmax_loss(
    hidden: tf.Tensor, targets: tf.Tensor, negatives: tf.Tensor, embeddings: tf.Tensor
) -> tf.Tensor:
    """Cross-entropy of the target against itself plus the batch's shared negatives; a negative equal to
    the target is masked out."""
    positive = tf.reduce_sum(hidden * tf.gather(embeddings, targets), -1, keepdims=True)
    negative = tf.einsum("bld,nd->bln", hidden, tf.gather(embeddings, negatives))
    negative = tf.where(targets[..., tf.newaxis] == negatives, MASKED_LOGIT, negative)
    logits = tf.concat([positive, negative], axis=-1)
    losses = tf.reduce_logsumexp(logits, -1) - positive[..., 0]
    return _mean_over_targets(losses, targets)


def full_softmax_loss(
    hidden: tf.Tensor, targets: tf.Tensor, _negatives: tf.Tensor, embeddings: tf.Tensor
) -> tf.Tensor:
    """Cross-entropy of the target against every item of the catalogue (exact; cost grows with it), on the
    positions that have a target only."""
    has_target = targets > 0
    logits = tf.matmul(tf.boolean_mask(hidden, has_target), embeddings[1:], transpose_b=True)
    labels = tf.boolean_mask(targets, has_target) - 1
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(losses)


def _mean_over_targets(losses: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    has_target = tf.cast(targets > 0, tf.float32)
    return tf.reduce_sum(losses * has_target) / tf.maximum(tf.reduce_sum(has_target), 1.0)


def last_position_scores(network: SASRecNetwork, sequences: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Keras' own logits of item indices ``items[r]`` after sequence ``r`` (for checking the numpy path)."""
    hidden = network(sequences, training=False)[:, -1]
    item_vectors = tf.gather(network.item_embedding.embeddings, np.asarray(items) + 1)
    return tf.reduce_sum(hidden * item_vectors, -1).numpy()


def export_weights(network: SASRecNetwork) -> dict[str, np.ndarray]:
    """The trained network as float32 numpy arrays, named as ``models.sasrec`` reads them."""
    weights = {
        "item_embedding": network.item_embedding.embeddings,
        "position_embedding": network.position_embedding.embeddings,
        "final_norm_gamma": network.final_norm.gamma,
        "final_norm_beta": network.final_norm.beta,
    }
    for k, block in enumerate(network.blocks):
        for norm in ("attention_norm", "ffn_norm"):
            weights[f"block_{k}_{norm}_gamma"] = getattr(block, norm).gamma
            weights[f"block_{k}_{norm}_beta"] = getattr(block, norm).beta
        for dense in ("query", "key", "value", "attention_out", "ffn_in", "ffn_out"):
            weights[f"block_{k}_{dense}_kernel"] = getattr(block, dense).kernel
            weights[f"block_{k}_{dense}_bias"] = getattr(block, dense).bias
    return {
        name: np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float32)
        for name, value in weights.items()
    }
