"""Features stage: hand-computed snapshot values, point-in-time correctness, online reads, Redis, ML-100k."""

from __future__ import annotations

import json
import math
import time
import zlib
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
    assert cat.loc["i1", "brand"] == ""  # no brand column


def test_item_catalogue_path_fallback_blank_categories_and_brand():
    items = pd.DataFrame(
        {
            "item_id": [1, 2, 3],  # ids become strings
            "category": ["  ", None, "Tea"],
            "category_path": ["Food > Snacks > Chips", "Home > Kitchen", None],
            "brand": ["Acme", None, " "],
        }
    )
    cat = F.item_catalogue(items, pd.DataFrame({"item_id": ["3"]})).set_index("item_id")
    assert cat["category"].to_dict() == {"1": "Food", "2": "Home", "3": "Tea"}  # blank -> top of the path
    assert cat["brand"].to_dict() == {"1": "Acme", "2": "", "3": ""}
    assert cat["price"].isna().all() and cat["year"].isna().all()


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
    assert (u1.favourite_category, u1.favourite_category_2, u1.favourite_category_3) == (
        "Drama",
        "Comedy",
        "",
    )
    assert (u2.n_interactions, u2.n_ratings, u2.n_purchases, u2.mean_rating) == (2, 1, 1, 3.0)
    assert (u2.recency_days, u2.active_days) == (14.0, 25.0)  # 5 Feb -> 1 Mar -> 15 Mar (leap year)
    assert (u2.favourite_category, u2.favourite_category_2) == ("Comedy", "")  # i4 has no category
    # Ratings data: no sessions, no views; u2's purchase of i4 has no event price or quantity, so it is
    # valued at i4's catalogue price x 1, but it is no order (orders are sessions with a purchase).
    assert (u1.monetary, u2.monetary, u2.n_orders, u2.n_sessions) == (0.0, 2.5, 0, 0)
    assert math.isnan(u2.events_per_session) and math.isnan(u2.session_minutes)
    assert u2.purchase_view_ratio == 0.0


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
    # windows (t - 7 days, t] and (t - 30 days, t] at t = 15 March: i4's 1 March purchase is in the 30-day one
    windows = dict(
        zip(items.index, zip(items["popularity_7d"], items["popularity_30d"], strict=True), strict=True)
    )
    assert windows == {"i1": (0, 0), "i2": (0, 0), "i3": (1, 1), "i4": (0, 1), "i5": (0, 0)}
    assert (items.loc["i4", "n_purchases"], items.loc["i4", "conversion_rate"]) == (1, 0.0)  # no views: 0
    assert items.loc["i1", "brand"] == "" and math.isnan(items.loc["i1", "price"])
    rows = pd.read_parquet(cfg.paths.features / "item_stats.parquet")
    by_time = rows.groupby("event_timestamp")["item_id"].apply(set)
    everything = {"i1", "i2", "i3", "i4", "i5"}
    assert by_time.iloc[0] == everything == by_time.iloc[-1]  # whole catalogue at the first and last snapshot
    # in between only items whose counts changed: on 22 January i2 got its first event and i1's 10 January
    # event left its 7-day window
    assert by_time[ts("2024-01-22")] == {"i1", "i2"}


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


def without_nan(row: dict) -> dict:
    """The online store returns None where the offline source has NaN (e.g. mean rating without ratings)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def assert_online_equals_latest(cfg: RunConfig, users=("u1", "u2"), items=("i1", "i4")) -> None:
    for file, key, read, names, ids in (
        ("user_profile.parquet", "user_id", F.online_user_features, F.USER_FEATURES, users),
        ("item_stats.parquet", "item_id", F.online_item_features, F.ITEM_FEATURES, items),
    ):
        offline = latest(cfg, file, key)
        online = read(cfg, [*ids, "ghost"])
        for entity in ids:
            expected = without_nan(offline.loc[entity, names].to_dict())
            assert without_nan(online[entity]) == pytest.approx(expected), entity
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


# ---------------------------------------------------------------------------------------------- shop schema

DAY = pd.Timedelta(days=1)
VIEWS = ("view", "click")


def shop_data(seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """~1,200 shop events of 30 users on 21 items over 10 weeks, in sessions, with every optional column
    partly null: event types, ratings only on rating events, prices (some missing), quantities (carts and
    purchases, some missing), sessions (10% none; "s0" is shared by two users). Some events sit exactly on a
    snapshot cut (Monday midnight), item i99 is not in the catalogue, i20 has no events."""
    rng = np.random.default_rng(seed)
    n_sessions, n = 200, 1200
    start = ts("2024-01-03 08:00")  # a Wednesday
    session_user = rng.integers(0, 30, n_sessions)
    session_start = start + pd.to_timedelta(rng.integers(0, 70 * 24 * 60, n_sessions), unit="min")
    session = rng.integers(0, n_sessions, n)
    stamps = pd.DatetimeIndex(session_start[session]) + pd.to_timedelta(rng.integers(0, 90, n), unit="min")
    mondays = stamps.normalize() - pd.to_timedelta(stamps.dayofweek, unit="D")
    stamps = stamps.where(rng.random(n) > 0.02, mondays)
    kind = rng.choice(["view", "click", "cart", "purchase", "rating"], n, p=[0.5, 0.15, 0.12, 0.13, 0.1])
    item = rng.choice([f"i{k}" for k in range(20)] + ["i99"], n)
    list_price = {f"i{k}": float(k + 1) for k in range(20)} | {"i99": 50.0}
    price = np.round([list_price[i] * f for i, f in zip(item, rng.uniform(0.8, 1.2, n), strict=True)], 2)
    user = np.array([f"u{u}" for u in session_user])[session]
    session_id = np.array([f"s{s}" for s in range(n_sessions)], dtype=object)[session]
    train = pd.DataFrame(
        {
            "user_id": user,
            "item_id": item,
            "rating": np.where(kind == "rating", rng.integers(1, 6, n), np.nan),
            "timestamp": stamps,
            "event_type": kind,
            "session_id": np.where(rng.random(n) < 0.1, None, session_id),
            "price": np.where(rng.random(n) < 0.15, np.nan, price),
            "quantity": np.where(np.isin(kind, ["cart", "purchase"]) & (rng.random(n) > 0.3),
                                 rng.integers(1, 4, n), np.nan),
            "source_file": "",
            "source_row": np.arange(1, n + 1, dtype="int64"),
        }
    )  # fmt: skip
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(21)],
            "category": [None, "", *[f"C{k % 4}" for k in range(2, 17)], None, None, None, "C1"],
            "category_path": [f"P{k % 3} > sub" if k % 5 == 0 else None for k in range(21)],
            "brand": [f"b{k % 5}" if k % 3 else None for k in range(21)],
            "price": [None if k % 4 == 0 else float(k + 1) for k in range(21)],
            "created_at": ts("2023-06-01"),
        }
    )
    return train, items


def reference_users(train: pd.DataFrame, catalogue: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """User features recomputed naively (a groupby per user) from the events at or before ``at``."""
    ev = train[train["timestamp"] <= at].merge(catalogue, on="item_id", how="left", suffixes=("", "_list"))
    purchase = ev["event_type"].eq("purchase")
    unit = ev["price"].fillna(ev["price_list"]).fillna(0.0)
    ev["spend"] = np.where(purchase, unit * ev["quantity"].fillna(1.0), 0.0)
    rows = {}
    for user, e in ev.groupby("user_id"):
        p, v = e["event_type"].eq("purchase"), e["event_type"].isin(VIEWS)
        sessions = e[e["session_id"].notna()].groupby("session_id")["timestamp"]
        counts = e.loc[e["category"] != "", "category"].value_counts()
        top = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]
        top += [""] * (3 - len(top))
        rows[user] = {
            "n_interactions": len(e),
            "n_items": e["item_id"].nunique(),
            "n_ratings": e["rating"].notna().sum(),
            "n_purchases": p.sum(),
            "n_orders": e.loc[p, "session_id"].nunique(),
            "monetary": e["spend"].sum(),
            "mean_rating": e["rating"].mean(),
            "recency_days": (at - e["timestamp"].max()) / DAY,
            "active_days": (e["timestamp"].max() - e["timestamp"].min()) / DAY,
            "n_sessions": sessions.ngroups,
            "events_per_session": sessions.size().mean() if sessions.ngroups else np.nan,
            "session_minutes": ((sessions.max() - sessions.min()) / pd.Timedelta(minutes=1)).mean()
            if sessions.ngroups
            else np.nan,
            "purchase_view_ratio": p.sum() / v.sum() if v.sum() else 0.0,
            **dict(zip(F.FAVOURITES, top, strict=True)),
        }
    return pd.DataFrame.from_dict(rows, orient="index")[F.USER_FEATURES]


def reference_items(train: pd.DataFrame, catalogue: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """Item features recomputed naively from the events at or before ``at``, for the whole catalogue."""
    ev = train[train["timestamp"] <= at]
    rows = {}
    for item in catalogue.itertuples():
        e = ev[ev["item_id"] == item.item_id]
        purchases, views = e["event_type"].eq("purchase").sum(), e["event_type"].isin(VIEWS).sum()
        rows[item.item_id] = {
            "popularity": len(e),
            "popularity_7d": (e["timestamp"] > at - 7 * DAY).sum(),
            "popularity_30d": (e["timestamp"] > at - 30 * DAY).sum(),
            "n_users": e["user_id"].nunique(),
            "n_purchases": purchases,
            "conversion_rate": purchases / views if views else 0.0,
            "mean_rating": e["rating"].mean(),
            "category": item.category,
            "brand": item.brand,
            "year": item.year,
            "price": item.price if pd.notna(item.price) else e["price"].mean(),
        }
    return pd.DataFrame.from_dict(rows, orient="index")[F.ITEM_FEATURES]


def assert_same_values(actual: pd.DataFrame, expected: pd.DataFrame, what: str) -> None:
    assert list(actual.index) == list(expected.index), what
    for column in expected.columns:
        a, e = actual[column], expected[column]
        if e.dtype == object and not column.startswith("year"):
            assert list(a.fillna("")) == list(e.fillna("")), f"{what}: {column}"
        else:
            np.testing.assert_allclose(
                pd.to_numeric(a).astype(float), pd.to_numeric(e).astype(float), rtol=1e-9, atol=1e-9,
                equal_nan=True, err_msg=f"{what}: {column}",
            )  # fmt: skip


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[RunConfig, pd.DataFrame, pd.DataFrame]:
    train, items = shop_data()
    cfg = write_inputs(tmp_path_factory.mktemp("shop"), train, items)
    F.build_features(cfg)
    return cfg, train, F.item_catalogue(items, train)


def test_shop_snapshots_equal_a_naive_recomputation_at_every_snapshot(shop):
    """The incremental (per-interval bincount) snapshots equal features recomputed from scratch from the
    events at or before each snapshot time: users in every snapshot, items as their latest row <= t."""
    cfg, train, catalogue = shop
    users = pd.read_parquet(cfg.paths.features / "user_profile.parquet")
    items = pd.read_parquet(cfg.paths.features / "item_stats.parquet")
    times = F.snapshot_times(train["timestamp"])
    assert len(times) == 11 and sorted(users["event_timestamp"].unique()) == times
    assert (train["timestamp"].isin(times[:-1])).sum() > 0  # some events sit exactly on a cut
    for at in times:
        got = users[users["event_timestamp"] == at].set_index("user_id")[F.USER_FEATURES]
        assert_same_values(got, reference_users(train, catalogue, at), f"users at {at}")
        known = items[items["event_timestamp"] <= at].sort_values("event_timestamp")
        got = known.drop_duplicates("item_id", keep="last").set_index("item_id").sort_index()[F.ITEM_FEATURES]
        assert_same_values(got, reference_items(train, catalogue, at), f"items at {at}")


def test_shop_features_by_hand(tmp_path):
    """One user's two sessions worked out by hand: RFM, session stats and favourite categories; one item's
    windows, conversion rate and price falling back to its mean event price."""
    rows = [  # user, item, timestamp, event type, session, price, quantity
        ("a", "x", "2024-05-01 10:00", "view", "s1", 9.0, None),
        ("a", "x", "2024-05-01 10:10", "click", "s1", 9.0, None),
        ("a", "x", "2024-05-01 10:30", "purchase", "s1", 10.0, 2.0),  # 20
        ("a", "y", "2024-05-01 10:40", "purchase", "s1", None, None),  # y's list price 4 x 1
        ("a", "z", "2024-05-20 09:00", "view", "s2", None, None),
        ("a", "z", "2024-05-20 09:06", "purchase", "s2", 5.5, 2.0),  # 11
        ("a", "x", "2024-05-28 12:00", "view", None, 8.0, None),  # no session
        ("b", "x", "2024-05-31 12:00", "cart", "s1", 11.0, 1.0),  # same session id, other user
    ]
    train = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event_type", "session_id", "price",
                                        "quantity"])  # fmt: skip
    train["timestamp"] = pd.to_datetime(train["timestamp"], utc=True)
    items = pd.DataFrame(
        {"item_id": ["x", "y", "z"], "category": ["Shoes", "Bags", "Bags"], "price": [None, 4.0, 6.0],
         "brand": ["Acme", None, "Zed"]}
    )  # fmt: skip
    cfg = write_inputs(tmp_path, train, items)
    F.build_features(cfg)
    users = latest(cfg, "user_profile.parquet", "user_id")
    a = users.loc["a"]
    assert (a.n_interactions, a.n_items, a.n_purchases, a.n_orders) == (7, 3, 3, 2)
    assert a.monetary == 20.0 + 4.0 + 11.0
    assert (a.n_sessions, a.events_per_session) == (2, 3.0)  # 4 + 2 events in sessions, 1 without
    assert a.session_minutes == (40 + 6) / 2
    assert a.purchase_view_ratio == 3 / 4  # views and clicks
    assert (a.favourite_category, a.favourite_category_2, a.favourite_category_3) == ("Shoes", "Bags", "")
    assert a.recency_days == 3.0  # 28 May 12:00 -> 31 May 12:00
    assert users.loc["b", "n_sessions"] == 1  # b's "s1" is b's own session
    x = latest(cfg, "item_stats.parquet", "item_id").loc["x"]
    # windows end 31 May 12:00: the 1 May events are just outside (1 May 12:00, 31 May 12:00]
    assert (x.popularity, x.popularity_7d, x.popularity_30d, x.n_users, x.n_purchases) == (5, 2, 2, 2, 1)
    assert x.conversion_rate == 1 / 3  # one purchase, three views/clicks
    assert x.price == pytest.approx((9 + 9 + 10 + 8 + 11) / 5)  # no list price: mean event price so far
    assert (x.brand, x.category) == ("Acme", "Shoes")


def test_minimal_columns_and_integer_ids(tmp_path):
    """Only the required columns (ids as integers, no event type, session, price or quantity): counts still
    work; money, sessions and conversion are zero or null rather than failing."""
    train = pd.DataFrame(
        {"user_id": [1, 1, 2], "item_id": [10, 11, 10],
         "timestamp": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-01-09"], utc=True)}
    )  # fmt: skip
    cfg = write_inputs(tmp_path, train, items=None)
    result = F.build_features(cfg)
    assert (result.user_rows, result.item_rows) == (2, 2)
    u1 = F.online_user_features(cfg, ["1"])["1"]
    assert (u1["n_interactions"], u1["n_items"], u1["n_purchases"], u1["monetary"], u1["n_sessions"]) == (
        2, 2, 0, 0.0, 0,
    )  # fmt: skip
    assert u1["session_minutes"] is None and u1["purchase_view_ratio"] == 0.0
    i10 = F.online_item_features(cfg, ["10"])["10"]
    assert (i10["popularity"], i10["n_users"], i10["conversion_rate"], i10["price"]) == (2, 2, 0.0, None)
    users, items = F.training_features(cfg, ["1", "2"], ["10", "11"], ts("2024-02-01"))
    assert np.isfinite(users).all() and np.isfinite(items).all() and users[:, 0].min() > 0


def test_favourite_categories_share_one_block_weighted_by_rank(shop):
    cfg, train, _ = shop
    profile = latest(cfg, "user_profile.parquet", "user_id")
    users, _ = F.training_features(cfg, list(profile.index), [], train["timestamp"].max())
    block = users[:, len(F.USER_MATRIX_COLUMNS) - F.CATEGORY_BUCKETS :]
    np.testing.assert_allclose(block.sum(axis=1), 1.0, rtol=1e-6)  # every shop user has a category
    checked = 0
    for row, (_, user) in enumerate(profile.iterrows()):
        names = [user[c] for c in F.FAVOURITES]
        buckets = {zlib.crc32(n.encode()) % F.CATEGORY_BUCKETS for n in names}
        if all(names) and len(buckets) == 3:  # three categories in three buckets: weights 3:2:1
            np.testing.assert_allclose(sorted(block[row][block[row] > 0]), [1 / 6, 2 / 6, 3 / 6], rtol=1e-6)
            first = zlib.crc32(names[0].encode()) % F.CATEGORY_BUCKETS
            assert block[row, first] == pytest.approx(0.5)
            checked += 1
    assert checked > 0


# ---------------------------------------------------------------------------------------------- point in time


def training_rows(train: pd.DataFrame) -> pd.DataFrame:
    """Every event as a training row at its own time, plus probes just before it and half a day later."""
    rows = train[["user_id", "item_id"]].assign(event_timestamp=train["timestamp"])
    probes = [
        rows.assign(event_timestamp=rows["event_timestamp"] + shift)
        for shift in (-pd.Timedelta("1s"), DAY / 2)
    ]
    return pd.concat([rows, *probes], ignore_index=True)


def test_point_in_time_features_equal_the_snapshot_at_or_before_each_row(shop):
    """Feast's per-row join gives every training row exactly the values recomputed from the events at or before
    the latest snapshot <= its time; rows before an entity's first snapshot get nothing."""
    cfg, train, catalogue = shop
    rows = training_rows(train)
    got = F.point_in_time_features(cfg, rows)
    assert len(got) == len(rows) and got.index.equals(rows.index)
    times = pd.DatetimeIndex(F.snapshot_times(train["timestamp"]))
    snapshot = times.searchsorted(pd.DatetimeIndex(rows["event_timestamp"]), side="right") - 1
    assert (
        (snapshot == -1).any() and (snapshot == len(times) - 1).any() and len(set(snapshot)) == len(times) + 1
    )
    for k in range(-1, len(times)):
        at = rows["event_timestamp"][snapshot == k]
        if k == -1:  # before the first snapshot: no features at all
            assert got.loc[at.index].filter(like="__").isna().all().all()
            continue
        users, items = (
            reference_users(train, catalogue, times[k]),
            reference_items(train, catalogue, times[k]),
        )
        mine = rows.loc[at.index]
        seen = mine["user_id"].isin(users.index)
        expected_users = users.reindex(mine["user_id"]).set_axis(mine.index)
        expected_users[F.FAVOURITES] = expected_users[F.FAVOURITES].fillna("")
        actual_users = got.loc[at.index, [f"user_profile__{n}" for n in F.USER_FEATURES]]
        actual_users.columns = F.USER_FEATURES
        assert_same_values(actual_users[seen], expected_users[seen], f"users at snapshot {times[k]}")
        assert actual_users[~seen].isna().all().all()  # the user's first event is later
        expected_items = items.reindex(mine["item_id"]).set_axis(mine.index)
        actual_items = got.loc[at.index, [f"item_stats__{n}" for n in F.ITEM_FEATURES]]
        actual_items.columns = F.ITEM_FEATURES
        assert_same_values(actual_items, expected_items, f"items at snapshot {times[k]}")


@pytest.fixture(scope="module")
def later_purchase(tmp_path_factory, shop) -> tuple[RunConfig, RunConfig, pd.Series]:
    """The shop built twice: as is, and with one big purchase (2 x 1000) by u3 of i5 added one day after a
    row time in the middle of the split."""
    cfg, train, _ = shop
    row_time = ts("2024-02-07 12:00")
    purchase = train.iloc[:1].assign(
        user_id="u3", item_id="i5", timestamp=row_time + DAY, event_type="purchase", session_id="later",
        price=1000.0, quantity=2.0, rating=np.nan,
    )  # fmt: skip
    with_purchase = pd.concat([train, purchase], ignore_index=True)
    assert F.snapshot_times(with_purchase["timestamp"]) == F.snapshot_times(train["timestamp"])
    other = write_inputs(tmp_path_factory.mktemp("later"), with_purchase, shop_data()[1])
    F.build_features(other)
    return cfg, other, pd.Series({"user_id": "u3", "item_id": "i5", "row_time": row_time})


def test_a_later_purchase_never_reaches_an_earlier_row(later_purchase):
    """Rows up to the purchase's time are identical with and without it (no leak); from the first snapshot
    after it, the purchase counts (so the comparison is not vacuous)."""
    cfg, other, probe = later_purchase
    purchase_time = probe.row_time + DAY
    cut = ts("2024-02-12")  # the first snapshot after the purchase
    nanosecond = pd.Timedelta("1ns")
    times = [probe.row_time, purchase_time - nanosecond, cut - nanosecond, cut, ts("2024-02-19 08:00")]
    rows = pd.DataFrame({"user_id": probe.user_id, "item_id": probe.item_id, "event_timestamp": times})
    before, after = F.point_in_time_features(cfg, rows), F.point_in_time_features(other, rows)
    features = [c for c in before.columns if "__" in c]
    # up to a nanosecond before the cut, the rows read a snapshot older than the purchase: unchanged
    pd.testing.assert_frame_equal(before.loc[:2, features], after.loc[:2, features])
    for row in (3, 4):  # from the cut on, the purchase counts
        assert after.loc[row, "user_profile__monetary"] == before.loc[row, "user_profile__monetary"] + 2000.0
        assert after.loc[row, "user_profile__n_orders"] == before.loc[row, "user_profile__n_orders"] + 1
        assert after.loc[row, "item_stats__popularity"] == before.loc[row, "item_stats__popularity"] + 1
        assert after.loc[row, "item_stats__n_purchases"] == before.loc[row, "item_stats__n_purchases"] + 1
    assert before.loc[0, "user_profile__monetary"] > 0  # u3 had bought before: a real value, not a miss

    users_at, items_at = F.training_features(other, ["u3"], ["i5"], probe.row_time)
    users_ok, items_ok = F.training_features(cfg, ["u3"], ["i5"], probe.row_time)
    np.testing.assert_array_equal(users_at, users_ok)  # the single-as_of reader agrees
    np.testing.assert_array_equal(items_at, items_ok)


def test_point_in_time_features_read_the_tuning_views(shop):
    cfg, train, _ = shop
    rows = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "event_timestamp": [train["timestamp"].max()]})
    final = F.point_in_time_features(cfg, rows)
    tuning = F.point_in_time_features(cfg, rows, tuning=True)  # fit == train here: same values
    pd.testing.assert_frame_equal(final, tuning)


@pytest.mark.services
def test_redis_shop_features_read_back(tmp_path, redis_url):
    train, items = shop_data()
    cfg = write_inputs(tmp_path, train, items, online_store="redis", redis_url=redis_url)
    try:
        F.build_features(cfg)
        assert_online_equals_latest(cfg, users=("u0", "u7", "u29"), items=("i0", "i5", "i20", "i99"))
    finally:
        F.feature_store(cfg).teardown()


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
