"""WeightedBlend and normalize_scores: fusion arithmetic, component handling, persistence, tuning."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from models.base import InteractionData, Recommender
from models.blend import WeightedBlend, normalize_scores
from models.ease import EASE
from models.popularity import Popularity
from tests.models.conftest import Evaluate, Split

Parts = dict[str, Recommender]


class CountingPopularity(Popularity):
    """Popularity that counts its fits, to see whether the blend refits a component."""

    fits = 0

    def fit(self, data: InteractionData) -> CountingPopularity:
        self.fits += 1
        return super().fit(data)


@pytest.fixture
def parts(tiny: InteractionData) -> Parts:
    return {"ease": EASE(l2=2.0).fit(tiny), "popularity": Popularity().fit(tiny)}


def test_minmax_maps_rows_to_unit_interval() -> None:
    scores = np.array([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]])
    np.testing.assert_allclose(normalize_scores(scores, "minmax"), [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]])


def test_zscore_centres_and_scales_rows() -> None:
    scores = np.array([[1.0, 2.0, 3.0], [-4.0, -4.0, -4.0]])
    root = np.sqrt(1.5)  # std of (1, 2, 3) is sqrt(2/3)
    np.testing.assert_allclose(
        normalize_scores(scores, "zscore"), [[-root, 0.0, root], [0.0, 0.0, 0.0]], rtol=1e-6
    )


def test_unknown_normalisation_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_scores(np.zeros((1, 2)), "rank")
    with pytest.raises(ValueError, match="unknown normalize"):
        WeightedBlend(components=["ease"], weights=[1.0], normalize="rank")
    with pytest.raises(ValueError, match="at least one weight"):
        WeightedBlend(components=["ease"], weights=[0.0])
    with pytest.raises(ValueError, match="2 components but 1 weights"):
        WeightedBlend(components=["ease", "popularity"], weights=[1.0])


@pytest.mark.parametrize("only", ["ease", "popularity"])
def test_weight_one_and_zero_gives_the_single_models_ranking(
    parts: Parts, tiny: InteractionData, only: str
) -> None:
    weights = {name: float(name == only) for name in parts}
    blend = WeightedBlend.from_models(parts, weights)
    users = np.arange(tiny.n_users)
    blended, _ = blend.recommend(users, k=4, exclude=tiny.matrix)
    single, _ = parts[only].recommend(users, k=4, exclude=tiny.matrix)
    np.testing.assert_array_equal(blended, single)


@pytest.mark.parametrize("method", ["minmax", "zscore"])
def test_score_is_weighted_sum_of_normalised_scores(parts: Parts, method: str) -> None:
    users = np.array([0, 4, 9])
    blend = WeightedBlend.from_models(parts, [0.7, 0.3], normalize=method)
    expected = 0.7 * normalize_scores(parts["ease"].score(users), method) + 0.3 * normalize_scores(
        parts["popularity"].score(users), method
    )
    np.testing.assert_allclose(blend.score(users), expected, rtol=1e-6)


def test_fit_builds_registry_components_with_their_params(tiny: InteractionData) -> None:
    blend = WeightedBlend(
        components=["ease", "popularity"], weights=[1.0, 0.5], component_params={"ease": {"l2": 7.0}}
    ).fit(tiny)
    assert blend.models["ease"].params["l2"] == 7.0
    np.testing.assert_allclose(blend.models["ease"].score([0]), EASE(l2=7.0).fit(tiny).score([0]))


def test_fit_fits_only_components_not_yet_fitted(tiny: InteractionData) -> None:
    fitted = CountingPopularity().fit(tiny)
    fresh = CountingPopularity()
    WeightedBlend.from_models({"a": fitted}, [1.0]).fit(tiny)
    WeightedBlend.from_models({"b": fresh}, [1.0], fitted=False).fit(tiny)
    assert (fitted.fits, fresh.fits) == (1, 1)


def test_save_load_round_trip(parts: Parts, tiny: InteractionData, tmp_path: Path) -> None:
    blend = WeightedBlend.from_models(parts, [0.6, 0.4], normalize="zscore")
    blend.save(tmp_path / "blend")
    assert (tmp_path / "blend" / "components" / "ease" / "recommender.json").exists()
    loaded = Recommender.load(tmp_path / "blend")
    assert isinstance(loaded, WeightedBlend) and isinstance(loaded.models["popularity"], Popularity)
    users = np.arange(tiny.n_users)
    np.testing.assert_array_equal(loaded.score(users), blend.score(users))


def test_search_spaces_give_constructor_kwargs() -> None:
    trial = optuna.trial.FixedTrial({"normalize": "zscore", "weight_ease": 0.8, "weight_popularity": 0.1})
    params = WeightedBlend.weight_space(trial, ["ease", "popularity"])
    assert params == {"components": ["ease", "popularity"], "weights": [0.8, 0.1], "normalize": "zscore"}
    assert WeightedBlend(**params).weights == [0.8, 0.1]


@pytest.mark.slow
def test_ml100k_blend_quality_and_speed(ml100k: Split, ml100k_ndcg: Evaluate) -> None:
    models = {"ease": EASE().fit(ml100k.train), "popularity": Popularity().fit(ml100k.train)}
    blend = WeightedBlend.from_models(models, {"ease": 0.9, "popularity": 0.1})
    start = time.perf_counter()
    blend.score(np.arange(ml100k.train.n_users))
    score_seconds = time.perf_counter() - start
    quality = ml100k_ndcg(blend)
    print(f"blend(EASE .9, popularity .1) ML-100k nDCG@10={quality:.4f} score-all {score_seconds:.3f}s")
    assert quality > 0.4
    assert score_seconds < 1.0
