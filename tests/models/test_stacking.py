"""Stacking: candidate generation and features, the lambdarank ranker, out-of-fold scores, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from models.base import InteractionData, Recommender
from models.ease import EASE
from models.popularity import Popularity
from models.stacking import OUTSIDE, Stacking, recency_matrix


@pytest.fixture
def stack(tiny: InteractionData) -> Stacking:
    parts = {"ease": EASE(l2=2.0).fit(tiny), "popularity": Popularity().fit(tiny)}
    history = [np.flatnonzero(tiny.matrix[u].toarray()[0]) for u in range(tiny.n_users)]
    data = InteractionData(
        tiny.matrix, tiny.user_ids, tiny.item_ids, tiny.user_features, tiny.item_features, history=history
    )
    return Stacking.from_models(parts, data, seen=tiny.matrix, depth=3, min_child_samples=1, num_leaves=3)


def cluster_labels(n_users: int = 12, n_items: int = 8) -> sp.csr_matrix:
    """Held-out truth for `tiny`: each user likes the unseen items of their cluster."""
    labels = np.zeros((n_users, n_items), dtype=np.float32)
    labels[:6, :4] = 1.0
    labels[6:, 4:] = 1.0
    return sp.csr_matrix(labels)


def test_recency_counts_events_since_last_occurrence() -> None:
    recency = recency_matrix([np.array([2, 0, 2, 1]), np.array([], dtype=np.int64)], (2, 3)).toarray()
    # user 0: item 1 is the last event (1), item 2 was 2 events ago (2), item 0 three (3)
    assert recency.tolist() == [[3.0, 1.0, 2.0], [0.0, 0.0, 0.0]]
    assert recency_matrix(None, (2, 3)).nnz == 0


def test_candidates_are_the_union_of_top_lists_minus_seen(stack: Stacking, tiny: InteractionData) -> None:
    candidates = stack.candidates(np.arange(12))
    assert candidates.features.shape == (len(candidates.rows), len(stack.feature_names()))
    seen = tiny.matrix.toarray() > 0
    assert not seen[candidates.rows, candidates.items].any()
    per_user = np.bincount(candidates.rows, minlength=12)
    assert (per_user >= 3).all() and (per_user <= 6).all()  # two top-3 lists, overlapping or not


def test_ranker_learns_held_out_relevance(stack: Stacking, tiny: InteractionData) -> None:
    stack.fit_ranker(np.arange(12), cluster_labels())
    items, _ = stack.recommend(np.arange(12), 2, exclude=tiny.matrix)
    own_cluster = [(row < 4).all() if user < 6 else (row >= 4).all() for user, row in enumerate(items)]
    assert (
        sum(own_cluster) >= 10
    )  # 12 groups are little data for LightGBM; unlabelled, it would favour popular items of both clusters


def test_items_outside_the_candidates_score_below_every_candidate(stack: Stacking) -> None:
    stack.fit_ranker(np.arange(12), cluster_labels())
    scores = stack.score(np.array([0]))
    candidates = stack.candidates(np.array([0]))
    outside = np.setdiff1d(np.arange(8), candidates.items)
    assert (scores[0, outside] < OUTSIDE + 1.01).all()
    assert scores[0, candidates.items].min() > scores[0, outside].max()


def test_cross_fitted_scores_cover_every_user(stack: Stacking) -> None:
    scores = stack.cross_fitted_scores(np.arange(12), cluster_labels(), folds=2)
    assert scores.shape == (12, 8) and np.isfinite(scores).all()


def test_round_trip_keeps_scores(stack: Stacking, tmp_path: Path) -> None:
    stack.fit_ranker(np.arange(12), cluster_labels())
    stack.save(tmp_path / "stack")
    loaded = Recommender.load(tmp_path / "stack")
    np.testing.assert_allclose(loaded.score(np.arange(12)), stack.score(np.arange(12)), atol=1e-6)


def test_needs_labels_before_scoring(stack: Stacking, tiny: InteractionData) -> None:
    with pytest.raises(RuntimeError, match="fit_ranker"):
        stack.score(np.array([0]))
    with pytest.raises(TypeError, match="from_models"):
        stack.fit(tiny)
    with pytest.raises(ValueError, match="no user has a relevant item"):
        stack.fit_ranker(np.arange(12), sp.csr_matrix((12, 8), dtype=np.float32))
