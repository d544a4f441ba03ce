"""Splits as model inputs: one id index, interaction matrices for fit/train, and held-out sets for scoring."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fusionrec.config import RunConfig
from models.base import InteractionData, Recommender, top_k
from pipelines.metrics import at_k, ranking_metrics

# Protocols where a user's past items may be recommended again (groceries): nothing is masked.
REPEATS_ALLOWED = {"next-basket"}


@dataclass
class HeldOut:
    """Held-out interactions of the users the model knows, aligned row by row."""

    user_idx: np.ndarray  # rows of the interaction matrix
    relevant: sp.csr_matrix  # (len(user_idx), n_items) binary
    n_relevant: np.ndarray  # |relevant| incl. items unknown to the model
    exclude: sp.csr_matrix | None  # (n_users, n_items) items to mask (seen), or None when repeats are allowed

    @property
    def n_users(self) -> int:
        return len(self.user_idx)


@dataclass
class SplitData:
    fit: InteractionData  # tuning: models fit here...
    valid: HeldOut  # ...and are scored here
    train: InteractionData  # final: fit + valid
    test: HeldOut  # scored once
    seen: sp.csr_matrix  # every known interaction (train + test): what serving never shows again
    item_categories: np.ndarray  # int category code per item (-1 unknown), for diversity metrics


def interaction_matrix(frame: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray) -> sp.csr_matrix:
    """Counts of interactions per (user, item) over the given id index; unknown ids are dropped."""
    users = pd.Index(user_ids).get_indexer(frame["user_id"])
    items = pd.Index(item_ids).get_indexer(frame["item_id"])
    known = (users >= 0) & (items >= 0)
    matrix = sp.csr_matrix(
        (np.ones(int(known.sum()), dtype=np.float32), (users[known], items[known])),
        shape=(len(user_ids), len(item_ids)),
    )
    matrix.sum_duplicates()
    return matrix


def held_out(
    frame: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray, seen: sp.csr_matrix, repeats: bool
) -> HeldOut:
    users = pd.Index(user_ids).get_indexer(frame["user_id"])
    frame = frame[users >= 0].drop_duplicates(["user_id", "item_id"])
    users = pd.Index(user_ids).get_indexer(frame["user_id"])
    items = pd.Index(item_ids).get_indexer(frame["item_id"])
    eval_users = np.unique(users)
    row = np.searchsorted(eval_users, users)
    known = items >= 0
    relevant = sp.csr_matrix(
        (np.ones(int(known.sum()), dtype=np.float32), (row[known], items[known])),
        shape=(len(eval_users), len(item_ids)),
    )
    relevant.data[:] = 1.0
    n_relevant = np.bincount(row, minlength=len(eval_users))
    return HeldOut(eval_users, relevant, n_relevant, None if repeats else seen)


def user_histories(frame: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray) -> list[np.ndarray]:
    """Each user's item indices in time order (ties by source row), repeats kept; unknown ids dropped."""
    order = [c for c in ("timestamp", "source_row") if c in frame]
    ordered = frame.sort_values(order, kind="stable") if order else frame
    users = pd.Index(user_ids).get_indexer(ordered["user_id"])
    items = pd.Index(item_ids).get_indexer(ordered["item_id"])
    known = (users >= 0) & (items >= 0)
    users, items = users[known], items[known]
    by_user = np.argsort(users, kind="stable")  # stable: time order survives within each user
    bounds = np.searchsorted(users[by_user], np.arange(len(user_ids) + 1))
    sorted_items = items[by_user].astype(np.int64)
    return [sorted_items[bounds[u] : bounds[u + 1]] for u in range(len(user_ids))]


def item_attributes(items: pd.DataFrame | None, item_ids: np.ndarray) -> tuple[list[str] | None, np.ndarray]:
    """Per item of the index: a text document (title, genres, category, brand; None when no item has any)
    and an int category code (-1 unknown)."""
    frame = pd.DataFrame({"item_id": item_ids.astype(str)})
    if items is not None:
        items = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id")
        frame = frame.merge(items, on="item_id", how="left")
    parts = [
        frame[col].fillna("").astype(str).str.replace("|", " ", regex=False)
        for col in ("title", "genres", "category", "brand")
        if col in frame
    ]
    text = [" ".join(words).strip() for words in zip(*parts, strict=True)] if parts else [""] * len(frame)
    category = frame["category"] if "category" in frame else pd.Series(pd.NA, index=frame.index)
    if "genres" in frame:
        category = category.fillna(frame["genres"].str.split("|").str[0])
    codes = pd.Series(pd.Categorical(category.replace("", pd.NA))).cat.codes.to_numpy(dtype=np.int64)
    return (text if any(text) else None), codes


def load_split_data(cfg: RunConfig, with_features: bool = True) -> SplitData:
    """Read ``cfg.paths.splits`` and build matrices over the train id index (plus Feast side features)."""
    splits = {
        name: pd.read_parquet(cfg.paths.splits / f"{name}.parquet")
        for name in ("fit", "valid", "train", "test")
    }
    train = splits["train"]
    user_ids = np.array(sorted(train["user_id"].unique()), dtype=object)
    item_ids = np.array(sorted(train["item_id"].unique()), dtype=object)
    fit_matrix = interaction_matrix(splits["fit"], user_ids, item_ids)
    train_matrix = interaction_matrix(train, user_ids, item_ids)
    fit_features: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
    train_features: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
    if with_features:
        from pipelines.features import feature_store, training_features

        # Tuning sees features computed from the fit split only, as of its end; final training those of train.
        store = feature_store(cfg)
        ids = (list(user_ids), list(item_ids))
        fit_features = training_features(
            cfg, *ids, pd.Timestamp(splits["fit"]["timestamp"].max()), store=store, tuning=True
        )
        train_features = training_features(cfg, *ids, pd.Timestamp(train["timestamp"].max()), store=store)
    repeats = cfg.effective_protocol in REPEATS_ALLOWED
    items_path = cfg.paths.validated / "items.parquet"
    text, categories = item_attributes(pd.read_parquet(items_path) if items_path.exists() else None, item_ids)
    return SplitData(
        fit=InteractionData(
            fit_matrix,
            user_ids,
            item_ids,
            *fit_features,
            item_text=text,
            history=user_histories(splits["fit"], user_ids, item_ids),
        ),
        valid=held_out(splits["valid"], user_ids, item_ids, fit_matrix, repeats),
        train=InteractionData(
            train_matrix,
            user_ids,
            item_ids,
            *train_features,
            item_text=text,
            history=user_histories(train, user_ids, item_ids),
        ),
        test=held_out(splits["test"], user_ids, item_ids, train_matrix, repeats),
        seen=interaction_matrix(pd.concat([train, splits["test"]]), user_ids, item_ids),
        item_categories=categories,
    )


def evaluate_recommender(model: Recommender, held: HeldOut, k: int) -> dict[str, float]:
    """Metrics@k of ``model`` on a held-out set (``ndcg@10`` etc.)."""
    recommended, _ = model.recommend(held.user_idx, k, exclude=held.exclude)
    return at_k(ranking_metrics(recommended, held.relevant, held.n_relevant, k), k)


def _top_k_unseen(scores: np.ndarray, held: HeldOut, k: int) -> np.ndarray:
    """Top-k items per held-out user from a (len(held.user_idx), n_items) score matrix, seen items masked."""
    exclude = None if held.exclude is None else held.exclude[held.user_idx]
    return top_k(scores, k, exclude)[0]


def evaluate_scores(scores: np.ndarray, held: HeldOut, k: int) -> dict[str, float]:
    """Metrics@k from a precomputed (len(held.user_idx), n_items) score matrix (used when tuning blends)."""
    recommended = _top_k_unseen(scores, held, k)
    return at_k(ranking_metrics(recommended, held.relevant, held.n_relevant, k), k)


def user_metric(scores: np.ndarray, held: HeldOut, k: int, metric: str = "ndcg") -> np.ndarray:
    """One metric@k per held-out user (rows of ``held``) from a score matrix: the input of paired bootstraps."""
    from pipelines.metrics import per_user_metrics

    recommended = _top_k_unseen(scores, held, k)
    return per_user_metrics(recommended, held.relevant, held.n_relevant, k)[metric]
