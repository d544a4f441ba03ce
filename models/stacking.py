"""Stacking: a LightGBM lambdarank model re-ranks the union of the base models' top lists.

Candidates for a user are the items in any component's top-``depth`` list (seen items excluded unless
repeats are allowed). Each (user, candidate) row carries every component's normalised score and rank, the
user's own history with the item (count, recency in events), the item's popularity, the user's activity and
the dense user/item side features (from Feast, as of the data the components were fitted on). The ranker is
trained on held-out interactions (a validation fold) by the caller, never on test.

Items outside the candidate set score ``OUTSIDE`` plus their mean normalised score, below every candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.base import InteractionData, Recommender
from models.blend import normalize_scores
from models.rank_fusion import component_ranks, masked

OUTSIDE = -1000.0  # far below any LightGBM score


@dataclass
class Candidates:
    """Candidate rows of a batch of users: ``rows`` index the batch, ``items`` the catalogue."""

    rows: np.ndarray
    items: np.ndarray
    features: np.ndarray  # (n_candidates, n_features) float32
    fallback: np.ndarray  # (n_users_in_batch, n_items) mean normalised score, orders non-candidates


def recency_matrix(history: list[np.ndarray] | None, shape: tuple[int, int]) -> sp.csr_matrix:
    """``[u, i]`` = 1 + how many of u's events came after u's last event on i (1 = the most recent); empty
    where u never had i, or when there is no time order."""
    if history is None:
        return sp.csr_matrix(shape, dtype=np.float32)
    lengths = np.array([len(h) for h in history])
    users = np.repeat(np.arange(len(history)), lengths)
    items = np.concatenate(history) if len(history) else np.array([], dtype=np.int64)
    position = np.concatenate([np.arange(n) for n in lengths]) if len(history) else np.array([])
    last = pd.DataFrame({"u": users, "i": items, "p": position}).groupby(["u", "i"])["p"].max().reset_index()
    gap = lengths[last["u"].to_numpy()] - last["p"].to_numpy()
    return sp.csr_matrix((gap.astype(np.float32), (last["u"], last["i"])), shape=shape)


class Stacking(Recommender):
    """Learning-to-rank over the base models' candidates; build with ``from_models``, then ``fit_ranker``."""

    name = "stacking"

    def __init__(
        self,
        components: list[str],
        depth: int = 50,
        # Small, heavily regularised trees: a validation fold has few labelled users, and deeper ensembles
        # overfit them (ML-100k: out-of-fold nDCG@10 0.205 with 300 trees x 31 leaves, 0.234 with 100 x 7).
        n_estimators: int = 100,
        learning_rate: float = 0.05,
        num_leaves: int = 7,
        min_child_samples: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__(
            components=list(components),
            depth=int(depth),
            n_estimators=int(n_estimators),
            learning_rate=float(learning_rate),
            num_leaves=int(num_leaves),
            min_child_samples=int(min_child_samples),
            seed=int(seed),
        )
        self.components = list(components)
        self.depth = int(depth)
        self.models: dict[str, Recommender] = {}
        self.ranker_: Any = None  # lightgbm.Booster
        self.counts_: sp.csr_matrix | None = None
        self.recency_: sp.csr_matrix | None = None
        self.seen_: sp.csr_matrix | None = None
        self.user_features_: np.ndarray | None = None
        self.item_features_: np.ndarray | None = None

    # --- building -----------------------------------------------------------------------------------
    @classmethod
    def from_models(
        cls,
        models: dict[str, Recommender],
        data: InteractionData,
        seen: sp.csr_matrix | None = None,
        **params: Any,
    ) -> Stacking:
        """Stack fitted components over the data they were fitted on; ``seen`` items never become candidates."""
        stack = cls(components=list(models), **params)
        stack.models = dict(models)
        stack.counts_ = sp.csr_matrix(data.matrix, dtype=np.float32)
        stack.recency_ = recency_matrix(data.history, data.matrix.shape)
        stack.seen_ = None if seen is None else sp.csr_matrix(seen, dtype=np.float32)
        stack.user_features_ = data.user_features
        stack.item_features_ = data.item_features
        return stack

    def fit(self, data: InteractionData) -> Stacking:
        raise TypeError("stacking needs held-out labels: build it with from_models, then fit_ranker")

    def feature_names(self) -> list[str]:
        names = [f"{m}_{kind}" for m in self.components for kind in ("score", "rank")]
        names += ["user_item_count", "user_item_recency", "item_popularity", "user_activity"]
        names += [f"user_f{j}" for j in range(_width(self.user_features_))]
        return names + [f"item_f{j}" for j in range(_width(self.item_features_))]

    def candidates(self, user_idx: np.ndarray) -> Candidates:
        """Candidate rows and their features for a batch of users."""
        user_idx = np.asarray(user_idx)
        n_items = self.counts_.shape[1]
        any_rank = np.zeros((len(user_idx), n_items), dtype=bool)
        per_model: list[tuple[np.ndarray, np.ndarray]] = []
        fallback = np.zeros((len(user_idx), n_items), dtype=np.float32)
        for name in self.components:
            raw = self.models[name].score(user_idx)
            norm = normalize_scores(raw)
            _, ranks = component_ranks(masked(raw, self.seen_, user_idx), self.depth)
            any_rank |= ranks > 0
            per_model.append((norm, ranks))
            fallback += norm / len(self.components)
        rows, items = np.nonzero(any_rank)
        users = user_idx[rows]
        columns: list[np.ndarray] = []
        for norm, ranks in per_model:
            rank = ranks[rows, items].astype(np.float32)
            columns += [norm[rows, items], np.where(rank > 0, rank, self.depth + 1)]
        popularity = np.asarray((self.counts_ > 0).sum(axis=0), dtype=np.float32).ravel()
        activity = np.asarray(self.counts_.sum(axis=1), dtype=np.float32).ravel()
        columns += [
            np.asarray(self.counts_[users, items], dtype=np.float32).ravel(),
            np.asarray(self.recency_[users, items], dtype=np.float32).ravel(),
            np.log1p(popularity[items]),
            np.log1p(activity[users]),
        ]
        blocks = [np.column_stack(columns).astype(np.float32)]
        if self.user_features_ is not None:
            blocks.append(np.asarray(self.user_features_[users], dtype=np.float32))
        if self.item_features_ is not None:
            blocks.append(np.asarray(self.item_features_[items], dtype=np.float32))
        return Candidates(rows, items, np.hstack(blocks), fallback)

    # --- the ranker -----------------------------------------------------------------------------------
    def train_ranker(self, candidates: Candidates, relevant: sp.csr_matrix) -> Any:
        """A LightGBM lambdarank booster trained on the candidates of the users (rows of ``relevant``)."""
        import lightgbm

        labels = np.asarray(relevant[candidates.rows, candidates.items]).ravel() > 0
        # Users without a relevant candidate carry no ranking signal: drop their rows.
        useful = np.bincount(candidates.rows, weights=labels, minlength=relevant.shape[0]) > 0
        keep = useful[candidates.rows]
        rows = candidates.rows[keep]
        if not keep.any():
            raise ValueError("stacking: no user has a relevant item among the candidates; raise depth")
        ranker = lightgbm.LGBMRanker(
            objective="lambdarank",
            n_estimators=self.params["n_estimators"],
            learning_rate=self.params["learning_rate"],
            num_leaves=self.params["num_leaves"],
            min_child_samples=self.params["min_child_samples"],
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            random_state=self.params["seed"],
            # One thread: OpenMP spin-waiting makes 2 threads up to 50x slower when the cores are busy
            # (measured: 100 trees on 3k rows, 0.4 s vs 22 s), and one thread is reproducible.
            n_jobs=1,
            verbose=-1,
        )
        # rows come out of np.nonzero sorted by user, so each group is contiguous
        ranker.fit(
            candidates.features[keep],
            labels[keep].astype(np.int32),
            group=np.bincount(rows)[np.unique(rows)],
            feature_name=self.feature_names(),
        )
        return ranker.booster_

    def fit_ranker(self, user_idx: np.ndarray, relevant: sp.csr_matrix) -> Stacking:
        """Train the ranker on held-out ``relevant`` items (rows aligned with ``user_idx``)."""
        self.ranker_ = self.train_ranker(self.candidates(user_idx), relevant)
        return self

    def scores_from(self, candidates: Candidates, ranker: Any) -> np.ndarray:
        scores = OUTSIDE + candidates.fallback
        if len(candidates.rows):
            scores[candidates.rows, candidates.items] = ranker.predict(candidates.features)
        return scores.astype(np.float32)

    def cross_fitted_scores(
        self,
        user_idx: np.ndarray,
        relevant: sp.csr_matrix,
        folds: int = 2,
        candidates: Candidates | None = None,
    ) -> np.ndarray:
        """Out-of-fold scores: each fold of users is scored by a ranker trained on the other folds, so the
        stacker's validation metrics are not measured on its own training labels. ``candidates`` (of
        ``user_idx``) can be passed in when tuning, to build them once."""
        candidates = self.candidates(user_idx) if candidates is None else candidates
        fold_of_user = np.random.default_rng(self.params["seed"]).integers(0, folds, len(user_idx))
        scores = np.empty((len(user_idx), self.counts_.shape[1]), dtype=np.float32)
        for fold in range(folds):
            train_users = fold_of_user != fold
            ranker = self.train_ranker(
                _subset(candidates, train_users), relevant[np.flatnonzero(train_users)]
            )
            test_users = np.flatnonzero(~train_users)
            scores[test_users] = self.scores_from(_subset(candidates, ~train_users), ranker)
        return scores

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        if self.ranker_ is None or not self.models:
            raise RuntimeError("Stacking.score called before fit_ranker")
        return self.scores_from(self.candidates(np.asarray(user_idx)), self.ranker_)

    # --- persistence ----------------------------------------------------------------------------------
    def _save_state(self, path: Path) -> None:
        for name in self.components:
            self.models[name].save(path / "components" / name)
        self.ranker_.save_model(str(path / "ranker.txt"))
        sp.save_npz(path / "counts.npz", self.counts_)
        sp.save_npz(path / "recency.npz", self.recency_)
        if self.seen_ is not None:
            sp.save_npz(path / "seen.npz", self.seen_)
        for name in ("user_features_", "item_features_"):
            if getattr(self, name) is not None:
                np.save(path / f"{name.rstrip('_')}.npy", getattr(self, name))

    def _load_state(self, path: Path) -> None:
        import lightgbm

        self.models = {name: Recommender.load(path / "components" / name) for name in self.components}
        self.ranker_ = lightgbm.Booster(model_file=str(path / "ranker.txt"))
        self.counts_ = sp.load_npz(path / "counts.npz").tocsr()
        self.recency_ = sp.load_npz(path / "recency.npz").tocsr()
        self.seen_ = sp.load_npz(path / "seen.npz").tocsr() if (path / "seen.npz").exists() else None
        for name in ("user_features_", "item_features_"):
            file = path / f"{name.rstrip('_')}.npy"
            setattr(self, name, np.load(file) if file.exists() else None)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 30, 300, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 3, 31, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 20, 400, log=True),
        }


def _width(features: np.ndarray | None) -> int:
    return 0 if features is None else features.shape[1]


def _subset(candidates: Candidates, users: np.ndarray) -> Candidates:
    """The candidates of the batch users where ``users`` (bool per batch row) is set, rows renumbered."""
    keep = users[candidates.rows]
    renumber = np.cumsum(users) - 1
    return Candidates(
        renumber[candidates.rows[keep]],
        candidates.items[keep],
        candidates.features[keep],
        candidates.fallback[users],
    )
