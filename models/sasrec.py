"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018), trained in TensorFlow,
scored in numpy.

Each user's items in time order (``InteractionData.history``; the CSR row order when there is none) feed
item embeddings plus learned position embeddings through ``blocks`` causal self-attention blocks; the
hidden state at each position is trained to predict the next item — against one sampled negative per
position (binary cross-entropy, as in the paper) or against negatives shared by the batch (sampled softmax).
Blocks are pre-norm: ``x + attention(LN(x))`` then ``x + feed-forward(LN(x))``, with a final layer norm.

``fit`` keeps each user's last ``max_len`` items and the exported weights; ``score`` replays the network in
numpy on those items and dots the final hidden state with every item embedding, so scoring, saving and
loading need no TensorFlow. Users with no history get the same, history-free scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import InteractionData, Recommender

if TYPE_CHECKING:
    import keras

LAYER_NORM_EPSILON = 1e-5
MASKED_LOGIT = -1e9  # additive-mask value: finite, so a row with no allowed key softmaxes without NaN
LOSSES = ("bce", "softmax")


class SASRec(Recommender):
    """Self-attentive sequential recommender.

    ``loss``: "bce" (one negative per position) or "softmax" (against ``negatives`` uniform items shared by
    each batch; with ``negatives=0``, or at least the catalogue size, the exact softmax over all items).
    ``hidden_dim`` must be a multiple of ``heads``.
    """

    name = "sasrec"

    def __init__(
        self,
        hidden_dim: int = 64,
        blocks: int = 2,
        heads: int = 1,
        dropout: float = 0.5,
        max_len: int = 50,
        loss: str = "softmax",
        negatives: int = 0,
        learning_rate: float = 0.001,
        epochs: int = 10,
        batch_size: int = 128,
        seed: int = 0,
    ) -> None:
        if hidden_dim % heads:
            raise ValueError(f"SASRec: hidden_dim {hidden_dim} is not a multiple of heads {heads}")
        if loss not in LOSSES:
            raise ValueError(f"SASRec: loss must be one of {LOSSES}, got {loss!r}")
        super().__init__(
            hidden_dim=hidden_dim,
            blocks=blocks,
            heads=heads,
            dropout=dropout,
            max_len=max_len,
            loss=loss,
            negatives=negatives,
            learning_rate=learning_rate,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
        )
        self.hidden_dim = int(hidden_dim)
        self.blocks = int(blocks)
        self.heads = int(heads)
        self.dropout = float(dropout)
        self.max_len = int(max_len)
        self.loss = loss
        self.negatives = int(negatives)
        self.learning_rate = float(learning_rate)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.weights_: dict[str, np.ndarray] | None = None  # see sasrec_keras.export_weights
        self.sequences_: np.ndarray | None = None  # (n_users, max_len) left-padded ids, item i = id i + 1

    def fit(self, data: InteractionData) -> SASRec:
        self._fit_network(data)
        return self

    def _fit_network(self, data: InteractionData) -> keras.Model:
        """Train, export the weights, and return the Keras network (tests compare it with ``score``)."""
        from models import sasrec_keras  # TensorFlow loads here, for training only

        sequences = user_sequences(data)
        self.sequences_ = last_items(sequences, self.max_len)

        def on_epoch_end(epoch: int, network: keras.Model) -> None:
            if self.epoch_callback is not None:  # exporting costs a little: only when someone listens
                self.weights_ = sasrec_keras.export_weights(network)
            self.report_epoch(epoch)

        network = sasrec_keras.train_sasrec(
            sequences,
            data.n_items,
            max_len=self.max_len,
            hidden_dim=self.hidden_dim,
            blocks=self.blocks,
            heads=self.heads,
            dropout=self.dropout,
            loss=self.loss,
            negatives=self.negatives,
            learning_rate=self.learning_rate,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            on_epoch_end=on_epoch_end,
        )
        self.weights_ = sasrec_keras.export_weights(network)
        return network

    def score(self, user_idx: np.ndarray, batch_size: int = 256) -> np.ndarray:
        if self.weights_ is None:
            raise RuntimeError("SASRec.score called before fit")
        user_idx = np.asarray(user_idx)
        items = self.weights_["item_embedding"][1:]
        scores = np.empty((len(user_idx), len(items)), dtype=np.float32)
        for start in range(0, len(user_idx), batch_size):
            rows = slice(start, start + batch_size)
            scores[rows] = self.hidden_states(self.sequences_[user_idx[rows]])[:, -1] @ items.T
        return scores

    def hidden_states(self, sequences: np.ndarray) -> np.ndarray:
        """The network's forward pass in numpy (inference: no dropout): left-padded id sequences
        (batch, length) -> hidden states (batch, length, hidden_dim)."""
        w = self.weights_
        length = sequences.shape[1]
        real = sequences > 0
        mask = real[..., None].astype(np.float32)
        x = w["item_embedding"][sequences] * np.float32(np.sqrt(self.hidden_dim))
        x = (x + w["position_embedding"][:length]) * mask
        allowed = np.tril(np.ones((length, length), dtype=bool))[None] & real[:, None, :]
        for k in range(self.blocks):
            x = self._block(x, allowed, mask, f"block_{k}_")
        return layer_norm(x, w["final_norm_gamma"], w["final_norm_beta"])

    def _block(self, x: np.ndarray, allowed: np.ndarray, mask: np.ndarray, prefix: str) -> np.ndarray:
        w = {name[len(prefix) :]: value for name, value in self.weights_.items() if name.startswith(prefix)}

        def dense(inputs: np.ndarray, name: str) -> np.ndarray:
            return inputs @ w[f"{name}_kernel"] + w[f"{name}_bias"]

        normed = layer_norm(x, w["attention_norm_gamma"], w["attention_norm_beta"])
        queries, keys, values = (split_heads(dense(normed, n), self.heads) for n in ("query", "key", "value"))
        logits = queries @ keys.transpose(0, 1, 3, 2) / np.float32(np.sqrt(queries.shape[-1]))
        logits = np.where(allowed[:, None], logits, np.float32(MASKED_LOGIT))
        x = x + dense(merge_heads(softmax(logits) @ values), "attention_out")
        hidden = np.maximum(dense(layer_norm(x, w["ffn_norm_gamma"], w["ffn_norm_beta"]), "ffn_in"), 0.0)
        return (x + dense(hidden, "ffn_out")) * mask

    def _save_state(self, path: Path) -> None:
        np.savez(path / "weights.npz", **self.weights_)
        np.save(path / "sequences.npy", self.sequences_)

    def _load_state(self, path: Path) -> None:
        with np.load(path / "weights.npz") as arrays:
            self.weights_ = {name: arrays[name] for name in arrays.files}
        self.sequences_ = np.load(path / "sequences.npy")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "hidden_dim": trial.suggest_categorical("hidden_dim", [32, 64, 128]),
            "blocks": trial.suggest_int("blocks", 1, 2),
            "heads": trial.suggest_int("heads", 1, 2),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "max_len": trial.suggest_categorical("max_len", [25, 50, 100]),  # 200: ~5x slower epochs
            "learning_rate": trial.suggest_float("learning_rate", 3e-4, 5e-3, log=True),
            "epochs": trial.suggest_int("epochs", 5, 30),  # quality peaks near 10 epochs on ML-100k
        }


def user_sequences(data: InteractionData) -> list[np.ndarray]:
    """Each user's item indices in time order: ``data.history``, or the CSR row order when there is none."""
    if data.history is not None:
        return [np.asarray(items, dtype=np.int64) for items in data.history]
    matrix = data.matrix.tocsr()
    return [
        matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]].astype(np.int64) for u in range(data.n_users)
    ]


def last_items(sequences: list[np.ndarray], max_len: int) -> np.ndarray:
    """(n_users, max_len) int32: each sequence's last ``max_len`` items as ids ``item + 1``, left-padded 0."""
    out = np.zeros((len(sequences), max_len), dtype=np.int32)
    for user, items in enumerate(sequences):
        tail = np.asarray(items[-max_len:], dtype=np.int32) + 1
        out[user, max_len - len(tail) :] = tail
    return out


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + np.float32(LAYER_NORM_EPSILON)) * gamma + beta


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def split_heads(x: np.ndarray, heads: int) -> np.ndarray:
    """(batch, length, dim) -> (batch, heads, length, dim / heads)."""
    batch, length, dim = x.shape
    return x.reshape(batch, length, heads, dim // heads).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    batch, heads, length, head_dim = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, length, heads * head_dim)
