"""NeuMF (He et al., "Neural Collaborative Filtering", WWW 2017), trained in TensorFlow, scored in numpy.

Two branches over separate user/item embeddings: GMF (their element-wise product) and an MLP over their
concatenation; the GMF vector and the MLP's last hidden layer are concatenated into one sigmoid unit.
Trained with binary cross-entropy on the observed pairs plus ``negatives`` uniformly sampled unseen items
per positive, drawn afresh each epoch, with Adam. (The paper's optional GMF/MLP pre-training is omitted.)

After ``fit`` the weights are exported as numpy arrays and ``score`` runs the forward pass in numpy over
(users x items), so scoring, saving and loading need no TensorFlow. Scores are the output unit's logit:
the same ranking as the sigmoid probability, without float32 saturation ties at the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import InteractionData, Recommender

if TYPE_CHECKING:
    import keras

# Size of the (users x items x width) activations scored at once: bounds memory to ~16 MB per buffer.
CHUNK_ELEMENTS = 1 << 22


class NeuMF(Recommender):
    """Neural matrix factorisation; ``mlp_layers[0]`` is the MLP's input width (user and item embeddings
    of half that size each), the rest are its hidden ReLU layers."""

    name = "neumf"

    def __init__(
        self,
        factors: int = 16,
        mlp_layers: Sequence[int] = (64, 32, 16),
        learning_rate: float = 0.001,
        negatives: int = 4,
        epochs: int = 12,
        batch_size: int = 1024,
        l2: float = 0.0,
        seed: int = 0,
    ) -> None:
        mlp_layers = [int(width) for width in mlp_layers]
        if not mlp_layers or min(mlp_layers) < 1:
            raise ValueError(f"NeuMF: mlp_layers needs at least one positive width, got {mlp_layers}")
        super().__init__(
            factors=factors,
            mlp_layers=mlp_layers,
            learning_rate=learning_rate,
            negatives=negatives,
            epochs=epochs,
            batch_size=batch_size,
            l2=l2,
            seed=seed,
        )
        self.factors = int(factors)
        self.mlp_layers = mlp_layers
        self.learning_rate = float(learning_rate)
        self.negatives = int(negatives)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.l2 = float(l2)
        self.seed = int(seed)
        self.weights_: dict[str, np.ndarray] | None = None  # see neumf_keras.export_weights

    def fit(self, data: InteractionData) -> NeuMF:
        self._fit_network(data)
        return self

    def _fit_network(self, data: InteractionData) -> keras.Model:
        """Train, export the weights, and return the Keras network (tests compare it with ``score``)."""
        from models import neumf_keras  # TensorFlow loads here, for training only

        def on_epoch_end(epoch: int, network: keras.Model) -> None:
            if self.epoch_callback is not None:  # exporting costs a little: only when someone listens
                self.weights_ = neumf_keras.export_weights(network)
            self.report_epoch(epoch)

        network = neumf_keras.train_neumf(
            data.matrix,
            factors=self.factors,
            mlp_layers=self.mlp_layers,
            learning_rate=self.learning_rate,
            negatives=self.negatives,
            epochs=self.epochs,
            batch_size=self.batch_size,
            l2=self.l2,
            seed=self.seed,
            on_epoch_end=on_epoch_end,
        )
        self.weights_ = neumf_keras.export_weights(network)
        return network

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if self.weights_ is None:
            raise RuntimeError("NeuMF.score called before fit")
        user_idx = np.asarray(user_idx)
        w = self.weights_
        n_items = len(w["item_gmf"])
        scores = np.empty((len(user_idx), n_items), dtype=np.float32)
        # GMF branch: sum_k h_k p_uk q_ik is one matrix product, no 3-D tensor needed.
        scores[:] = (w["user_gmf"][user_idx] * w["output_gmf"]) @ w["item_gmf"].T + w["output_bias"]
        widest = max([len(w["output_mlp"]), *(b.shape[0] for b in self._mlp_biases())])
        step = max(1, CHUNK_ELEMENTS // (n_items * widest))
        for start in range(0, len(user_idx), step):
            rows = slice(start, start + step)
            scores[rows] += self._mlp_logits(user_idx[rows])
        return scores

    def _mlp_biases(self) -> list[np.ndarray]:
        return [self.weights_[f"mlp_bias_{k}"] for k in range(len(self.mlp_layers) - 1)]

    def _mlp_logits(self, users: np.ndarray) -> np.ndarray:
        """MLP branch's contribution to the logit for every (user, item) pair: (len(users), n_items).

        The first layer acts on ``[p_u ; q_i]``, so it splits into a user part and an item part that
        broadcast into the (users, items, width) activations without materialising the concatenation.
        """
        w = self.weights_
        layers = [(w[f"mlp_kernel_{k}"], w[f"mlp_bias_{k}"]) for k in range(len(self.mlp_layers) - 1)]
        user_emb, item_emb = w["user_mlp"][users], w["item_mlp"]
        half = user_emb.shape[1]
        if not layers:  # no hidden layer: the output unit reads the concatenated embeddings directly
            kernel = w["output_mlp"]
            return (user_emb @ kernel[:half])[:, None] + (item_emb @ kernel[half:])[None, :]
        kernel, bias = layers[0]
        hidden = (user_emb @ kernel[:half])[:, None, :] + (item_emb @ kernel[half:] + bias)[None, :, :]
        np.maximum(hidden, 0.0, out=hidden)
        for kernel, bias in layers[1:]:
            hidden = hidden @ kernel
            hidden += bias
            np.maximum(hidden, 0.0, out=hidden)
        return hidden @ w["output_mlp"]

    def _save_state(self, path: Path) -> None:
        np.savez(path / "weights.npz", **self.weights_)

    def _load_state(self, path: Path) -> None:
        with np.load(path / "weights.npz") as arrays:
            self.weights_ = {name: arrays[name] for name in arrays.files}

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        depth = trial.suggest_int("mlp_depth", 1, 3)
        width = trial.suggest_categorical("mlp_width", [32, 64, 128])
        return {
            "factors": trial.suggest_categorical("factors", [8, 16, 32, 64]),
            "mlp_layers": [width // 2**k for k in range(depth + 1)],
            "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
            "negatives": trial.suggest_int("negatives", 1, 8),
            "epochs": trial.suggest_int("epochs", 5, 30),
            "l2": trial.suggest_float("l2", 1e-7, 1e-3, log=True),
        }
