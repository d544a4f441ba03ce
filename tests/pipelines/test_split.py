"""Splits: proportions, stratification, time order, last baskets, no leakage between parts."""

import numpy as np
import pandas as pd
import pytest

from pipelines.split import last_basket_split, split_interactions, stratified_split, temporal_split


def _frame(n_users: int = 6, n_items: int = 8, per_user: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for j in range(per_user):
            rows.append(
                {
                    "user_id": str(u),
                    "item_id": str(rng.integers(n_items)),
                    "rating": 4.0,
                    "timestamp": pd.Timestamp("2020-01-01", tz="UTC") + pd.Timedelta(days=j),
                    "event_type": "rating",
                    "session_id": f"{u}-{j // 3}",
                    "source_row": len(rows) + 1,
                }
            )
    return pd.DataFrame(rows)


def test_stratified_split_is_per_item_and_deterministic() -> None:
    data = _frame()
    train, test = stratified_split(data, 0.75, "item_id", seed=42)
    assert len(train) + len(test) == len(data)
    assert set(train["source_row"]).isdisjoint(test["source_row"])
    for item, group in data.groupby("item_id"):
        assert (train["item_id"] == item).sum() == round(0.75 * len(group))
    again, _ = stratified_split(data, 0.75, "item_id", seed=42)
    assert list(again["source_row"]) == list(train["source_row"])
    other, _ = stratified_split(data, 0.75, "item_id", seed=7)
    assert list(other["source_row"]) != list(train["source_row"])


def test_stratified_split_shuffles_each_group_independently() -> None:
    # 200 items with 4 rows each: a per-group shuffle seeded alike for every group would hold out the same
    # position every time; independent draws hold out each of the four positions.
    data = pd.DataFrame({"item_id": np.repeat(np.arange(200), 4), "position": np.tile(np.arange(4), 200)})
    _, test = stratified_split(data, 0.75, "item_id", seed=42)
    assert len(test) == 200 and test.groupby("item_id").size().eq(1).all()
    assert set(test["position"]) == {0, 1, 2, 3}


def test_stratified_split_rounds_like_the_reference() -> None:
    # round(0.75 * n) rows of each group to the first part: n=1 -> 1, n=2 -> 2 (round half to even), n=3 -> 2
    data = pd.DataFrame({"item_id": ["a", "b", "b", "c", "c", "c"], "x": range(6)})
    train, test = stratified_split(data, 0.75, "item_id", seed=1)
    assert train.groupby("item_id").size().to_dict() == {"a": 1, "b": 2, "c": 2}
    assert list(test["item_id"]) == ["c"]


def test_temporal_split_keeps_time_order_per_user() -> None:
    first, second, third = temporal_split(_frame(), (0.8, 0.1, 0.1))
    for user in first["user_id"].unique():
        assert (
            first[first.user_id == user]["timestamp"].max() < third[third.user_id == user]["timestamp"].min()
        )
    assert len(first) == 6 * 8 and len(second) == 6 and len(third) == 6


def test_last_basket_split_takes_each_users_last_order() -> None:
    data = _frame()
    before, last = last_basket_split(data)
    assert set(last["session_id"]) == {f"{u}-3" for u in range(6)}
    assert len(before) + len(last) == len(data)


def test_single_order_users_stay_in_training() -> None:
    data = _frame(n_users=1, per_user=2)  # one session only
    before, last = last_basket_split(data)
    assert last.empty and len(before) == 2


@pytest.mark.parametrize("protocol", ["msr", "temporal", "next-basket"])
def test_train_is_fit_plus_valid_and_disjoint_from_test(protocol: str) -> None:
    parts = split_interactions(_frame(), protocol, seed=42)
    rows = {name: set(frame["source_row"]) for name, frame in parts.items()}
    assert rows["train"] == rows["fit"] | rows["valid"]
    assert rows["fit"].isdisjoint(rows["valid"])
    assert rows["train"].isdisjoint(rows["test"])
    assert rows["train"] | rows["test"] == set(range(1, 61))


def test_next_basket_needs_sessions() -> None:
    data = _frame().assign(session_id=None)
    with pytest.raises(ValueError, match="session"):
        split_interactions(data, "next-basket", seed=1)
