"""Features stage: hand-computed snapshot values, point-in-time correctness, online reads, Redis, ML-100k."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import RunConfig
from pipelines import features as F
from pipelines.stage import StageInputError

UTC = "UTC"
SITE = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages"


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


def tiny_train() -> pd.DataFrame:
    """u1 rates i1 (Comedy) and i2 (Drama) in January and i3 (Drama) in March; u2 rates i1 in February and
    buys i4 (no category) on 1 March. The training split ends on 15 March."""
    rows = [
        ("u1", "i1", 4.0, "2024-01-10", "rating"),
        ("u1", "i2", 2.0, "2024-01-20", "rating"),
        ("u2", "i1", 3.0, "2024-02-05", "rating"),
        ("u2", "i4", None, "2024-03-01", "purchase"),
        ("u1", "i3", 5.0, "2024-03-15", "rating"),
    ]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "event_type"])
    df["rating"] = df["rating"].astype("float64")
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    df["session_id"] = None
    df["source_row"] = np.arange(1, len(df) + 1, dtype="int64")
    return df


def tiny_items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3", "i4", "i5"],
            "genres": ["Comedy|Drama", "Drama", None, None, "Action"],
            "category": [None, "Drama", "Drama", None, None],
            "year": pd.array([1995, None, 2001, None, 2010], dtype="Int64"),
            "price": [None, None, None, 2.5, None],
        }
    )


def write_inputs(
    home: Path, train: pd.DataFrame, items: pd.DataFrame | None, fit: pd.DataFrame | None = None, **overrides
) -> RunConfig:
    cfg = RunConfig.from_env(home=home, **overrides)
    cfg.paths.splits.mkdir(parents=True, exist_ok=True)
    train.to_parquet(cfg.paths.splits / "train.parquet", index=False)
    (train if fit is None else fit).to_parquet(cfg.paths.splits / "fit.parquet", index=False)
    # The test split must never be read: a poisoned one proves it.
    poisoned = train.assign(timestamp=ts("2024-01-01"), user_id="leak")
    poisoned.to_parquet(cfg.paths.splits / "test.parquet", index=False)
    if items is not None:
        cfg.paths.validated.mkdir(parents=True, exist_ok=True)
        items.to_parquet(cfg.paths.validated / "items.parquet", index=False)
    return cfg


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[RunConfig, F.FeaturesResult]:
    cfg = write_inputs(tmp_path_factory.mktemp("features"), tiny_train(), tiny_items())
    return cfg, F.build_features(cfg)


def latest(cfg: RunConfig, file: str, key: str) -> pd.DataFrame:
    """Each entity's most recent snapshot row, indexed by ``key``."""
    df = pd.read_parquet(cfg.paths.features / file).sort_values("event_timestamp")
    return df.drop_duplicates(key, keep="last").set_index(key)


# ---------------------------------------------------------------------------------------------- pure parts


def test_snapshot_times_weekly_grid_ending_at_last_event():
    times = F.snapshot_times(tiny_train()["timestamp"])
    assert times[-1] == ts("2024-03-15")
    assert all(ts("2024-01-10") < t for t in times)
    assert all(t.dayofweek == 0 and t == t.normalize() for t in times[:-1])  # Monday midnights
    assert len(times) == 10  # 9 Mondays from 15 Jan to 11 Mar, then 15 Mar


def test_snapshot_times_coarsen_for_long_spans():
    span = pd.Series(pd.to_datetime(["2000-01-01", "2020-06-30"], utc=True))
    times = F.snapshot_times(span)
    assert len(times) < F.MAX_SNAPSHOTS
    assert times[-1] == span.max()


def test_item_catalogue_category_fallbacks_and_unknown_items():
    train = pd.concat([tiny_train(), tiny_train().iloc[:1].assign(item_id="i9")])
    cat = F.item_catalogue(tiny_items(), train).set_index("item_id")
    assert cat.loc["i1", "category"] == "Comedy"  # first genre when no category
    assert cat.loc["i3", "category"] == "Drama"
    assert cat.loc["i4", "category"] == ""
    assert cat.loc["i9", "category"] == "" and pd.isna(cat.loc["i9", "year"])  # train item not in catalogue
    assert cat.loc["i4", "price"] == 2.5


def test_redis_connection_string():
    assert F.redis_connection_string("redis://127.0.0.1:6379/0") == "127.0.0.1:6379,db=0"
    assert F.redis_connection_string("redis://:s3cret@cache:6380/2") == "cache:6380,db=2,password=s3cret"
    assert F.redis_connection_string("redis:6379,db=1") == "redis:6379,db=1"


def test_project_name_unique_per_home_on_redis(tmp_path):
    a = RunConfig.from_env(home=tmp_path / "a", online_store="redis")
    b = RunConfig.from_env(home=tmp_path / "b", online_store="redis")
    assert F.feast_project(a) != F.feast_project(b)
    assert F.feast_project(RunConfig.from_env(home=tmp_path / "a")) == "fusionrec"


def test_missing_train_split_fails_with_one_clear_line(tmp_path):
    with pytest.raises(StageInputError, match="run the split stage first"):
        F.build_features(RunConfig.from_env(home=tmp_path))


# ---------------------------------------------------------------------------------------------- the stage


def test_build_features_result_and_report(built):
    cfg, result = built
    assert (result.user_rows, result.item_rows) == (2, 5)  # i5 is in the catalogue with no events
    assert result.online_store == "sqlite" and result.project == "fusionrec"
    assert Path(result.registry).exists() and (cfg.paths.features / "online.db").exists()
    assert result.materialized_until == "2024-03-15T00:00:01+00:00"
    assert result.user_features == F.USER_FEATURES and "favourite_category" in result.user_features
    report = json.loads((cfg.paths.reports / "features.json").read_text())
    assert report["snapshots"] == result.snapshots == 10


def test_latest_user_snapshot_values(built):
    cfg, _ = built
    users = latest(cfg, "user_profile.parquet", "user_id")
    assert "leak" not in users.index
    u1, u2 = users.loc["u1"], users.loc["u2"]
    assert (u1.n_interactions, u1.n_items, u1.n_ratings, u1.n_purchases) == (3, 3, 3, 0)
    assert u1.mean_rating == pytest.approx(11 / 3)
    assert (u1.recency_days, u1.active_days) == (0.0, 65.0)  # 10 Jan -> 15 Mar 2024
    assert u1.favourite_category == "Drama"  # Drama 2, Comedy 1
    assert (u2.n_interactions, u2.n_ratings, u2.n_purchases, u2.mean_rating) == (2, 1, 1, 3.0)
    assert (u2.recency_days, u2.active_days) == (14.0, 25.0)  # 5 Feb -> 1 Mar -> 15 Mar (leap year)
    assert u2.favourite_category == "Comedy"  # i4 has no category


def test_tied_favourite_category_is_alphabetical(built):
    cfg, _ = built
    df = pd.read_parquet(cfg.paths.features / "user_profile.parquet").set_index(
        ["user_id", "event_timestamp"]
    )
    assert df.loc[("u1", ts("2024-01-22")), "favourite_category"] == "Comedy"  # Comedy 1, Drama 1


def test_latest_item_snapshot_values(built):
    cfg, _ = built
    items = latest(cfg, "item_stats.parquet", "item_id")
    i1 = items.loc["i1"]
    assert (i1.popularity, i1.n_users, i1.mean_rating, i1.category, i1.year) == (2, 2, 3.5, "Comedy", 1995)
    assert (items.loc["i4", "popularity"], items.loc["i4", "price"], items.loc["i5", "popularity"]) == (
        1,
        2.5,
        0,
    )
    rows = pd.read_parquet(cfg.paths.features / "item_stats.parquet")
    by_time = rows.groupby("event_timestamp")["item_id"].apply(set)
    assert by_time.iloc[0] == {"i1", "i2", "i3", "i4", "i5"}  # whole catalogue at the first snapshot
    assert by_time.iloc[-1] == {"i3"}  # then only items whose statistics changed


# ---------------------------------------------------------------------------------------------- retrieval


def test_point_in_time_join_never_sees_later_events(built):
    cfg, _ = built
    store = F.feature_store(cfg)
    entity_df = pd.DataFrame({"user_id": ["u1", "u2"], "event_timestamp": ts("2024-02-01")})
    df = store.get_historical_features(
        entity_df=entity_df, features=["user_profile:n_interactions", "user_profile:mean_rating"]
    ).to_df()
    feb = df.set_index("user_id").reindex(["u1", "u2"])  # the file store may drop rows without a match
    assert feb.loc["u1", "n_interactions"] == 2  # January only, not the March event
    assert feb.loc["u1", "mean_rating"] == 3.0
    assert pd.isna(feb.loc["u2", "n_interactions"])  # u2's first event is on 5 February

    users, items = F.training_features(cfg, ["u1", "u2"], ["i3", "i1"], ts("2024-02-01"), store=store)
    n_interactions = F.USER_MATRIX_COLUMNS.index("n_interactions")
    popularity = F.ITEM_MATRIX_COLUMNS.index("popularity")
    assert users[0, n_interactions] == pytest.approx(math.log1p(2))
    assert not users[1].any()  # no snapshot yet -> zeros
    assert items[0, popularity] == 0.0  # i3 is first rated on 15 March
    assert items[1, popularity] == pytest.approx(math.log1p(1))  # u2's February rating of i1 is not visible


def test_training_features_fixed_width_aligned_and_deterministic(built):
    cfg, _ = built
    users, items = F.training_features(
        cfg, ["u2", "u1", "nobody", "u1"], ["i1", "i4", "i9"], ts("2024-06-01")
    )
    assert users.dtype == np.float32 and items.dtype == np.float32
    assert users.shape == (4, len(F.USER_MATRIX_COLUMNS)) and items.shape == (3, len(F.ITEM_MATRIX_COLUMNS))
    np.testing.assert_array_equal(users[1], users[3])  # duplicates aligned
    assert not users[2].any() and not items[2].any()  # unknown ids -> zeros
    one_hot = users[:, len(F.USER_MATRIX_COLUMNS) - F.CATEGORY_BUCKETS :]
    assert one_hot[:2].sum(axis=1).tolist() == [1.0, 1.0]
    assert not items[1, len(F.ITEM_MATRIX_COLUMNS) - F.CATEGORY_BUCKETS :].any()  # i4 has no category
    again_users, again_items = F.training_features(cfg, ["u1"], ["i4"], ts("2024-06-01"))
    np.testing.assert_array_equal(again_users[0], users[1])  # a row does not depend on the other ids
    np.testing.assert_array_equal(again_items[0], items[1])
    empty_users, _ = F.training_features(cfg, [], ["i1"], ts("2024-06-01"))
    assert empty_users.shape == (0, len(F.USER_MATRIX_COLUMNS))


def assert_online_equals_latest(cfg: RunConfig) -> None:
    users = latest(cfg, "user_profile.parquet", "user_id")
    online = F.online_user_features(cfg, ["u1", "u2", "ghost"])
    for user_id in ("u1", "u2"):
        expected = users.loc[user_id, F.USER_FEATURES].to_dict()
        assert online[user_id] == pytest.approx(expected), user_id
    assert set(online["ghost"].values()) == {None}


def test_online_features_equal_latest_snapshot(built):
    assert_online_equals_latest(built[0])


def test_works_without_items_or_ratings_and_rebuilds(tmp_path):
    """Instacart-like: purchases only, no item table -> empty categories, null ratings, still fixed width."""
    train = tiny_train().assign(event_type="purchase", rating=np.nan)
    cfg = write_inputs(tmp_path, train, items=None)
    result = F.build_features(cfg)
    assert result.item_rows == 4
    online = F.online_user_features(cfg, ["u1"])["u1"]
    assert online["n_purchases"] == 3 and online["favourite_category"] == ""
    assert online["mean_rating"] is None or math.isnan(online["mean_rating"])
    users, items = F.training_features(cfg, ["u1"], ["i1"], ts("2024-03-15"))
    assert np.isfinite(users).all() and users.shape[1] == len(F.USER_MATRIX_COLUMNS)

    # A rebuild on a shorter split replaces the online rows, though they are older than the stored ones.
    train.iloc[:3].to_parquet(cfg.paths.splits / "train.parquet", index=False)
    F.build_features(cfg)
    assert F.online_user_features(cfg, ["u1"])["u1"]["n_purchases"] == 2


@pytest.mark.services
def test_redis_online_store(tmp_path, redis_url):
    cfg = write_inputs(tmp_path, tiny_train(), tiny_items(), online_store="redis", redis_url=redis_url)
    try:
        result = F.build_features(cfg)
        assert result.online_store == "redis" and result.project.startswith("fusionrec_")
        assert_online_equals_latest(cfg)
        # Redis skips writes older than the stored row, so a rebuild must clear the project's keys first.
        tiny_train().iloc[:3].to_parquet(cfg.paths.splits / "train.parquet", index=False)
        F.build_features(cfg)
        assert F.online_user_features(cfg, ["u1"])["u1"]["n_interactions"] == 2
    finally:
        F.feature_store(cfg).teardown()  # removes this project's keys only


# ---------------------------------------------------------------------------------------------- real data


def read_ml100k() -> tuple[pd.DataFrame, pd.DataFrame]:
    """ML-100k's .inter/.item files in canonical form (ratings as events, first genre as category)."""
    folder = SITE / "recbole/dataset_example/ml-100k"
    if not folder.exists():
        pytest.skip("ML-100k missing: pip install --no-deps recbole==1.2.1")
    inter = pd.read_csv(folder / "ml-100k.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    train = pd.DataFrame(
        {
            "user_id": inter["user_id"].astype(str),
            "item_id": inter["item_id"].astype(str),
            "rating": inter["rating"].astype("float64"),
            "timestamp": pd.to_datetime(inter["timestamp"], unit="s", utc=True),
            "event_type": "rating",
            "session_id": None,
            "source_row": np.arange(1, len(inter) + 1, dtype="int64"),
        }
    )
    raw = pd.read_csv(folder / "ml-100k.item", sep="\t")
    raw.columns = [c.split(":")[0] for c in raw.columns]
    genres = raw["class"].fillna("").str.split().str.join("|")
    items = pd.DataFrame(
        {
            "item_id": raw["item_id"].astype(str),
            "title": raw["movie_title"],
            "genres": genres,
            "year": pd.to_numeric(raw["release_year"], errors="coerce").astype("Int64"),
        }
    )
    return train, items


@pytest.mark.slow
def test_ml100k_build_and_retrieve(tmp_path, record_property):
    train, items = read_ml100k()
    cfg = write_inputs(tmp_path, train, items)
    started = time.perf_counter()
    result = F.build_features(cfg)
    build_s = time.perf_counter() - started
    assert (result.user_rows, result.item_rows) == (943, 1682)

    user_ids, item_ids = sorted(train["user_id"].unique()), sorted(items["item_id"])
    started = time.perf_counter()
    users, item_matrix = F.training_features(cfg, user_ids, item_ids, train["timestamp"].max())
    retrieve_s = time.perf_counter() - started
    assert users.shape == (943, len(F.USER_MATRIX_COLUMNS)) and np.isfinite(users).all()
    assert item_matrix.shape == (1682, len(F.ITEM_MATRIX_COLUMNS)) and np.isfinite(item_matrix).all()
    assert (users[:, 0] > 0).all()  # every user has at least one rating by the last snapshot

    counts = train.groupby("user_id").size()
    online = F.online_user_features(cfg, ["1", "405"])
    assert online["1"]["n_interactions"] == counts["1"] and online["405"]["n_interactions"] == counts["405"]
    record_property("ml100k_build_s", round(build_s, 2))
    record_property("ml100k_retrieve_s", round(retrieve_s, 2))
    print(
        f"\nML-100k features: build {build_s:.1f}s ({result.snapshots} snapshots), retrieval {retrieve_s:.2f}s"
    )


def test_tuning_features_come_from_the_fit_split_only(tmp_path):
    train = tiny_train()
    fit = train[train["item_id"] != "i1"]  # every i1 event is a validation event
    cfg = write_inputs(tmp_path, train, tiny_items(), fit=fit)
    F.build_features(cfg)
    as_of = train["timestamp"].max()
    popularity = F.ITEM_MATRIX_COLUMNS.index("popularity")
    _, final = F.training_features(cfg, [], ["i1"], as_of)
    _, tuning = F.training_features(cfg, [], ["i1"], as_of, tuning=True)
    assert final[0, popularity] > 0
    assert tuning[0, popularity] == 0  # the validation events of i1 never reach the tuning features
    # only the training-phase views are served online
    assert {v.name for v in F.feature_store(cfg).list_feature_views() if v.online} == {
        "user_profile",
        "item_stats",
    }
