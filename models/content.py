"""Content-based recommender: TF-IDF item documents, a user profile per user, cosine scores.

Each item's document (``InteractionData.item_text``: title, genres/category, brand words) becomes an
L2-normalised TF-IDF vector. A user's profile is the weighted mean of the vectors of the items they
interacted with (no recency), and an item scores ``cosine(profile, item)``. Without item text, the dense
``item_features`` rows (standardised per column) are the content vectors instead.

Because scores depend only on an item's content, the model also answers for items nobody has interacted
with yet: ``score_new_items`` and ``similar_items`` embed new documents with the stored vocabulary and IDF.
scikit-learn builds the vocabulary at fit time; the fitted state is plain json/numpy/scipy (no pickle), and
loading, scoring and embedding new items need only numpy and scipy.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.base import InteractionData, Recommender, top_k

# scikit-learn's default token pattern: words of two or more word characters, lower-cased.
TOKEN = re.compile(r"(?u)\b\w\w+\b")
PROFILE_WEIGHTINGS = ("binary", "count", "log")


class ContentTFIDF(Recommender):
    """TF-IDF content model.

    ``min_df``: a term must occur in at least this many item documents; ``ngram_max``: 1 for words, 2 for
    words and word pairs; ``sublinear_tf``: ``1 + log(tf)`` instead of raw term counts; ``profile_weighting``:
    how a user's items weigh in the profile — ``binary`` (plain mean), ``count`` (interaction weight) or
    ``log`` (``1 + log(weight)``).
    """

    name = "content"

    def __init__(
        self,
        min_df: int = 1,
        ngram_max: int = 1,
        sublinear_tf: bool = True,
        profile_weighting: str = "binary",
    ) -> None:
        if profile_weighting not in PROFILE_WEIGHTINGS:
            raise ValueError(f"ContentTFIDF: profile_weighting must be one of {PROFILE_WEIGHTINGS}")
        if ngram_max not in (1, 2):
            raise ValueError(f"ContentTFIDF: ngram_max must be 1 or 2, got {ngram_max}")
        super().__init__(
            min_df=min_df, ngram_max=ngram_max, sublinear_tf=sublinear_tf, profile_weighting=profile_weighting
        )
        self.min_df = int(min_df)
        self.ngram_max = int(ngram_max)
        self.sublinear_tf = bool(sublinear_tf)
        self.profile_weighting = profile_weighting
        self.item_vectors_: sp.csr_matrix | None = None  # (n_items, n_terms) float32, unit rows (or zero)
        self.user_matrix_: sp.csr_matrix | None = None  # (n_users, n_items) profile weights
        self.vocabulary_: dict[str, int] | None = None  # text mode: term -> column
        self.idf_: np.ndarray | None = None  # text mode: (n_terms,) float64
        self.feature_mean_: np.ndarray | None = None  # feature mode: column means
        self.feature_scale_: np.ndarray | None = None  # feature mode: column std (1 where constant)

    # --- fitting ------------------------------------------------------------------------------------
    def fit(self, data: InteractionData) -> ContentTFIDF:
        self.vocabulary_ = self.idf_ = self.feature_mean_ = self.feature_scale_ = None
        if data.item_text is not None:
            self._fit_text(data.item_text)
        elif data.item_features is not None:
            self._fit_features(np.asarray(data.item_features, dtype=np.float64))
        else:
            raise ValueError("ContentTFIDF needs item_text or item_features")
        if self.item_vectors_.shape[0] != data.n_items:
            raise ValueError(
                f"ContentTFIDF: {self.item_vectors_.shape[0]} item documents for {data.n_items} items"
            )
        self.user_matrix_ = profile_weights(data.matrix, self.profile_weighting)
        return self

    def _fit_text(self, texts: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer  # fit time only

        vectorizer = TfidfVectorizer(
            min_df=min(self.min_df, len(texts)),
            ngram_range=(1, self.ngram_max),
            sublinear_tf=self.sublinear_tf,
            dtype=np.float32,
        )
        try:
            self.item_vectors_ = sp.csr_matrix(vectorizer.fit_transform(texts), dtype=np.float32)
            self.vocabulary_ = {term: int(col) for term, col in vectorizer.vocabulary_.items()}
            self.idf_ = np.asarray(vectorizer.idf_, dtype=np.float64)
        except ValueError:  # empty vocabulary (every document blank or pruned): no content signal
            self.vocabulary_, self.idf_ = {}, np.zeros(0)
            self.item_vectors_ = sp.csr_matrix((len(texts), 0), dtype=np.float32)

    def _fit_features(self, features: np.ndarray) -> None:
        self.feature_mean_ = features.mean(axis=0)
        std = features.std(axis=0)
        self.feature_scale_ = np.where(std > 1e-12, std, 1.0)
        self.item_vectors_ = self._feature_vectors(features)

    # --- content vectors ----------------------------------------------------------------------------
    def embed(self, items: Sequence[str] | np.ndarray) -> sp.csr_matrix:
        """Unit-norm content vectors of new items: documents in text mode, feature rows in feature mode."""
        if self.item_vectors_ is None:
            raise RuntimeError("ContentTFIDF used before fit")
        if self.vocabulary_ is not None:
            if isinstance(items, np.ndarray) and items.ndim == 2:
                raise ValueError("ContentTFIDF was fitted on item text: pass documents, not feature rows")
            return tfidf_vectors(list(items), self.vocabulary_, self.idf_, self.ngram_max, self.sublinear_tf)
        features = np.atleast_2d(np.asarray(items, dtype=np.float64))
        if features.shape[1] != len(self.feature_mean_):
            raise ValueError(
                f"ContentTFIDF was fitted on {len(self.feature_mean_)} item features: pass rows of that width"
            )
        return self._feature_vectors(features)

    def _feature_vectors(self, features: np.ndarray) -> sp.csr_matrix:
        standard = (features - self.feature_mean_) / self.feature_scale_
        return sp.csr_matrix(normalize_rows(standard).astype(np.float32))

    # --- scoring ------------------------------------------------------------------------------------
    def profiles(self, user_idx: np.ndarray) -> sp.csr_matrix:
        """Unit-norm user profiles (a user with no items, or only blank ones, gets a zero row)."""
        if self.user_matrix_ is None:
            raise RuntimeError("ContentTFIDF.score called before fit")
        return sparse_normalize_rows(self.user_matrix_[np.asarray(user_idx)] @ self.item_vectors_)

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return _dense(self.profiles(user_idx) @ self.item_vectors_.T)

    def score_new_items(self, user_idx: np.ndarray, texts: Sequence[str] | np.ndarray) -> np.ndarray:
        """Cosine of the users' profiles with items unseen at fit time: (len(user_idx), len(texts)).

        ``texts`` are the new items' documents (or, for a model fitted on features, their feature rows)."""
        return _dense(self.profiles(user_idx) @ self.embed(texts).T)

    def similar_items(self, texts: Sequence[str] | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` known items closest in content to each new item, best first: (indices, cosines)."""
        return top_k(_dense(self.embed(texts) @ self.item_vectors_.T), k)

    # --- persistence --------------------------------------------------------------------------------
    def _save_state(self, path: Path) -> None:
        sp.save_npz(path / "item_vectors.npz", self.item_vectors_)
        sp.save_npz(path / "user_matrix.npz", self.user_matrix_)
        if self.vocabulary_ is not None:
            (path / "vocabulary.json").write_text(json.dumps(self.vocabulary_))
            np.save(path / "idf.npy", self.idf_)
        else:
            np.save(path / "feature_mean.npy", self.feature_mean_)
            np.save(path / "feature_scale.npy", self.feature_scale_)

    def _load_state(self, path: Path) -> None:
        self.item_vectors_ = sp.load_npz(path / "item_vectors.npz").tocsr()
        self.user_matrix_ = sp.load_npz(path / "user_matrix.npz").tocsr()
        if (path / "vocabulary.json").exists():
            self.vocabulary_ = json.loads((path / "vocabulary.json").read_text())
            self.idf_ = np.load(path / "idf.npy")
        else:
            self.feature_mean_ = np.load(path / "feature_mean.npy")
            self.feature_scale_ = np.load(path / "feature_scale.npy")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "min_df": trial.suggest_int("min_df", 1, 3),
            "ngram_max": trial.suggest_int("ngram_max", 1, 2),
            "sublinear_tf": trial.suggest_categorical("sublinear_tf", [True, False]),
            "profile_weighting": trial.suggest_categorical("profile_weighting", list(PROFILE_WEIGHTINGS)),
        }


def profile_weights(matrix: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    """Each user's item weights for the profile mean (positive entries only)."""
    weights = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    weights.data = np.where(weights.data > 0, weights.data, 0.0).astype(np.float32)
    weights.eliminate_zeros()
    if weighting == "binary":
        weights.data[:] = 1.0
    elif weighting == "log":
        weights.data = 1.0 + np.log(np.maximum(weights.data, 1.0))
    return weights


def tokens(text: str, ngram_max: int) -> list[str]:
    """scikit-learn's default analyzer: lower-case words of 2+ characters, then space-joined n-grams."""
    words = TOKEN.findall(text.lower())
    grams = list(words)
    for n in range(2, ngram_max + 1):
        grams += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    return grams


def tfidf_vectors(
    texts: Sequence[str], vocabulary: dict[str, int], idf: np.ndarray, ngram_max: int, sublinear_tf: bool
) -> sp.csr_matrix:
    """L2-normalised TF-IDF rows of ``texts`` over a fitted vocabulary (unknown terms dropped), matching
    ``TfidfVectorizer.transform`` of the vectorizer that produced ``vocabulary`` and ``idf``."""
    rows, cols, values = [], [], []
    for row, text in enumerate(texts):
        counts = Counter(vocabulary[t] for t in tokens(text, ngram_max) if t in vocabulary)
        rows += [row] * len(counts)
        cols += list(counts)
        values += list(counts.values())
    tf = np.asarray(values, dtype=np.float64)
    if sublinear_tf:
        tf = 1.0 + np.log(tf)
    weights = tf * idf[np.asarray(cols, dtype=np.int64)]
    matrix = sp.csr_matrix((weights, (rows, cols)), shape=(len(texts), len(idf)))
    return sparse_normalize_rows(matrix).astype(np.float32)


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def sparse_normalize_rows(matrix: sp.spmatrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0)) @ matrix)


def _dense(matrix: sp.spmatrix | np.ndarray) -> np.ndarray:
    dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    return dense.astype(np.float32, copy=False)
