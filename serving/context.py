"""What promotion precomputes so a request only filters and re-ranks a short list.

For each promoted version: every known user's candidates (top-N with, per item, the *anchor*: the item of the
user's history most similar to it, which becomes "because you viewed X"), and a version *context*: the
catalogue attributes the filters need (category, brand, price, title), popularity overall and per category
(cold start "popular in Y"), and content neighbours of every catalogue item (new items without interactions
included: "similar to Z").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.bundle import Bundle
from pipelines.schema import CATEGORY_SEPARATOR

log = logging.getLogger(__name__)

NEIGHBOURS = 10  # content neighbours kept per item
POPULAR_PER_CATEGORY = 100
HISTORY_ANCHORS = 50  # most recent... (most interacted) history items considered as anchors
_BATCH = 512


def read_catalogue(items_path: Path, item_ids: Sequence[str]) -> pd.DataFrame:
    """Catalogue rows for the model's items plus any item the table has (new items), indexed by item_id.

    Columns: title, category (the first/top-level one), brand, price (NaN when unknown), text (for content).
    """
    frame = pd.read_parquet(items_path) if Path(items_path).exists() else pd.DataFrame({"item_id": []})
    frame["item_id"] = frame["item_id"].astype(str)
    frame = frame.drop_duplicates("item_id").set_index("item_id")
    known = pd.Index([str(i) for i in item_ids])
    frame = frame.reindex(known.union(frame.index, sort=False))

    def column(name: str) -> pd.Series:
        return frame[name] if name in frame else pd.Series(None, index=frame.index, dtype=object)

    category = column("category").astype(object)
    for fallback in ("category_path", "genres"):  # ML-100k has genres "Action|Comedy"
        first = column(fallback).astype(object).map(_first_category)
        category = category.where(category.notna() & (category.astype(str) != ""), first)
    out = pd.DataFrame(index=frame.index)
    out["title"] = column("title").astype(object).where(column("title").notna(), None)
    out["category"] = category.where(category.notna(), None)
    out["brand"] = column("brand").astype(object).where(column("brand").notna(), None)
    out["price"] = pd.to_numeric(column("price"), errors="coerce")
    parts = [
        column(c).fillna("").astype(str) for c in ("title", "category", "category_path", "genres", "brand")
    ]
    description = column("description").fillna("").astype(str).str.slice(0, 500)
    out["text"] = pd.concat([*parts, description], axis=1).agg(" ".join, axis=1).str.replace("|", " ")
    return out


def _first_category(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    text = str(value)
    for separator in (CATEGORY_SEPARATOR, "|"):
        text = text.split(separator)[0]
    return text.strip() or None


def content_neighbours(texts: pd.Series, k: int = NEIGHBOURS) -> dict[str, list[str]]:
    """The ``k`` items closest in TF-IDF text to each item (itself excluded), best first."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(texts) < 2 or not texts.str.strip().any():
        return {}
    try:
        vectors = TfidfVectorizer(sublinear_tf=True, min_df=1).fit_transform(texts.tolist())
    except ValueError:  # empty vocabulary
        return {}
    vectors = sp.csr_matrix(vectors, dtype=np.float32)
    ids = texts.index.to_numpy()
    out: dict[str, list[str]] = {}
    for start in range(0, len(ids), _BATCH):
        block = (vectors[start : start + _BATCH] @ vectors.T).toarray()
        rows = np.arange(block.shape[0])
        block[rows, rows + start] = -1.0  # not its own neighbour
        top = np.argsort(-block, axis=1, kind="stable")[:, :k]
        for row, picks in enumerate(top):
            keep = picks[block[row, picks] > 0]
            if len(keep):
                out[str(ids[start + row])] = [str(ids[j]) for j in keep]
    return out


def anchored_candidates(
    bundle: Bundle, recs: dict[str, list[tuple[str, float]]]
) -> dict[str, list[tuple[str, float, str | None]]]:
    """Each candidate with the history item most co-consumed with it (cosine of item columns), or None."""
    seen = bundle.seen.tocsr().astype(np.float32)
    norms = np.sqrt(np.asarray(seen.multiply(seen).sum(axis=0)).ravel())
    norms[norms == 0] = 1.0
    columns = sp.csc_matrix(seen @ sp.diags(1.0 / norms))
    position = {str(item): j for j, item in enumerate(bundle.item_ids)}
    user_row = {str(user): u for u, user in enumerate(bundle.user_ids)}
    counts = np.asarray(seen.sum(axis=0)).ravel()
    out: dict[str, list[tuple[str, float, str | None]]] = {}
    for user, ranked in recs.items():
        u = user_row.get(user)
        history = seen.indices[seen.indptr[u] : seen.indptr[u + 1]] if u is not None else np.array([], int)
        if len(history) > HISTORY_ANCHORS:
            history = history[np.argsort(-counts[history], kind="stable")[:HISTORY_ANCHORS]]
        candidates = np.array([position.get(item, -1) for item, _ in ranked])
        anchors: list[str | None] = [None] * len(ranked)
        valid = candidates >= 0
        if len(history) and valid.any():
            similarity = (columns[:, candidates[valid]].T @ columns[:, history]).toarray()
            best = similarity.argmax(axis=1)
            strongest = similarity[np.arange(len(best)), best]
            for slot, b, s in zip(np.flatnonzero(valid), best, strongest, strict=True):
                if s > 0 and history[b] != candidates[slot]:
                    anchors[slot] = str(bundle.item_ids[history[b]])
        out[user] = [(item, score, anchor) for (item, score), anchor in zip(ranked, anchors, strict=True)]
    return out


def build_context(bundle: Bundle, items_path: Path, top_n: int) -> dict[str, Any]:
    """The version context the API loads once per version (see the module docstring)."""
    catalogue = read_catalogue(items_path, [str(i) for i in bundle.item_ids])
    popularity = pd.Series(0.0, index=catalogue.index)
    popularity.loc[[str(i) for i in bundle.item_ids]] = bundle.popularity.astype(float)
    by_category: dict[str, list[list[Any]]] = {}
    ranked = popularity[popularity > 0].sort_values(ascending=False, kind="stable")
    categories = catalogue["category"].reindex(ranked.index)
    for category, group in ranked.groupby(categories, sort=False):
        top = group.head(POPULAR_PER_CATEGORY)
        by_category[str(category)] = [[item, float(score)] for item, score in top.items()]
    neighbours = content_neighbours(catalogue["text"])
    items = {
        item: [
            row.title if isinstance(row.title, str) else None,
            row.category if isinstance(row.category, str) else None,
            row.brand if isinstance(row.brand, str) else None,
            None if np.isnan(row.price) else round(float(row.price), 2),
        ]
        for item, row in zip(catalogue.index, catalogue.itertuples(index=False), strict=True)
    }
    log.info(
        "serving context: %d catalogue items, %d categories, %d with content neighbours",
        len(items),
        len(by_category),
        len(neighbours),
    )
    return {
        "item_fields": ["title", "category", "brand", "price"],
        "items": items,
        "popular": [[item, float(score)] for item, score in ranked.head(top_n).items()],
        "popular_by_category": by_category,
        "neighbours": neighbours,
    }
