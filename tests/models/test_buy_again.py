"""Buy again: the user's own items by count, then popular items."""

from pathlib import Path

import numpy as np
import optuna
import scipy.sparse as sp

from models.base import InteractionData, Recommender
from models.buy_again import BuyAgain


def _data() -> InteractionData:
    # user 0 bought item 2 three times and item 0 once; item 1 is the most popular overall
    matrix = sp.csr_matrix(np.array([[1, 0, 3, 0], [0, 2, 0, 0], [0, 1, 0, 1]], dtype=np.float32))
    return InteractionData(matrix, np.array(["a", "b", "c"]), np.array(["w", "x", "y", "z"]))


def test_own_items_by_count_then_popularity() -> None:
    items, _ = BuyAgain().fit(_data()).recommend(np.array([0]), k=4)
    assert list(items[0]) == [2, 0, 1, 3]


def test_repeats_come_back_when_not_excluded_and_vanish_when_excluded() -> None:
    data = _data()
    model = BuyAgain().fit(data)
    assert model.recommend(np.array([1]), k=1)[0][0, 0] == 1
    assert model.recommend(np.array([1]), k=1, exclude=data.matrix)[0][0, 0] != 1


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = BuyAgain(popularity_weight=0.01).fit(_data())
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score(np.arange(3)), model.score(np.arange(3)))


def test_search_space() -> None:
    params = BuyAgain.search_space(optuna.trial.FixedTrial({"popularity_weight": 0.01}))
    assert BuyAgain(**params).params == {"popularity_weight": 0.01}
