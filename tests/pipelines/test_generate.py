"""The synthetic shop generator: files and types, determinism, and the behaviour models can learn from."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fusionrec.commands.generate import generate as generate_command
from pipelines.generate import (
    EVENT_NAMES,
    GenerateConfig,
    GenerateError,
    GenerateResult,
    generate,
    load_truth,
)
from pipelines.schema import CATEGORY_SEPARATOR, REVIEW_COLUMNS

CONFIG = GenerateConfig(users=2_000, items=500, events=50_000, seed=7, chunk_events=20_000, with_pii=True)
TS = pa.timestamp("ns", tz="UTC")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateResult, Path]:
    out = tmp_path_factory.mktemp("shop")
    return generate(replace(CONFIG, out=out)), out


@pytest.fixture(scope="module")
def events(shop: tuple[GenerateResult, Path]) -> pd.DataFrame:
    return pd.read_parquet(shop[1] / "events")


@pytest.fixture(scope="module")
def items(shop: tuple[GenerateResult, Path]) -> pd.DataFrame:
    return pd.read_parquet(shop[1] / "items.parquet")


@pytest.fixture(scope="module")
def users(shop: tuple[GenerateResult, Path]) -> pd.DataFrame:
    return pd.read_parquet(shop[1] / "users.parquet")


def _schema(path: Path) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in pq.read_schema(path)}


def test_every_file_has_the_canonical_columns_and_types(shop: tuple[GenerateResult, Path]) -> None:
    result, out = shop
    parts = sorted((out / "events").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(result.parts)]
    assert result.parts >= 2  # written in chunks
    for part in parts:
        assert _schema(part) == {
            "user_id": pa.string(),
            "item_id": pa.string(),
            "event_type": pa.string(),
            "timestamp": TS,
            "session_id": pa.string(),
            "price": pa.float64(),
            "quantity": pa.float64(),
        }
        assert pd.read_parquet(part)["timestamp"].is_monotonic_increasing
    assert _schema(out / "items.parquet") == {
        "item_id": pa.string(),
        "title": pa.string(),
        "description": pa.string(),
        "category": pa.string(),
        "category_path": pa.string(),
        "brand": pa.string(),
        "price": pa.float64(),
        "created_at": TS,
    }
    assert _schema(out / "users.parquet") == {
        "user_id": pa.string(),
        "signup_time": TS,
        "region": pa.string(),
        "email": pa.string(),
        "phone": pa.string(),
        "full_name": pa.string(),
        "address": pa.string(),
    }
    reviews = _schema(out / "reviews.parquet")
    assert tuple(reviews) == REVIEW_COLUMNS
    assert (reviews["rating"], reviews["timestamp"]) == (pa.float64(), TS)


def test_counts_are_exact_and_in_the_manifest(
    shop: tuple[GenerateResult, Path], events: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame
) -> None:
    result, out = shop
    assert len(events) == result.events == CONFIG.events
    assert (len(items), len(users)) == (CONFIG.items, CONFIG.users)
    assert set(events["event_type"]) == set(EVENT_NAMES)
    assert events["event_type"].value_counts().to_dict() == result.event_types
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {
        "events": CONFIG.events,
        "users": CONFIG.users,
        "items": CONFIG.items,
        "reviews": len(pd.read_parquet(out / "reviews.parquet")),
        "parts": result.parts,
    }
    assert manifest["event_types"] == result.event_types
    assert manifest["seed"] == CONFIG.seed and manifest["events_per_second"] > 0
    assert (
        events["user_id"].str.fullmatch(r"u\d{7}").all() and events["item_id"].str.fullmatch(r"i\d{6}").all()
    )
    assert items["item_id"].is_unique and users["user_id"].is_unique
    assert set(result.paths) == {"events", "items", "users", "reviews", "truth", "manifest"}


def test_catalogue_text_names_brand_and_category(items: pd.DataFrame) -> None:
    paths = items["category_path"].str.split(CATEGORY_SEPARATOR, regex=False)
    assert (paths.str.len() == 3).all() and (paths.str[0] == items["category"]).all()
    assert items["category"].nunique() == 10
    for row in items.head(50).itertuples():
        assert row.brand in row.description and row.category.lower() in row.description
        assert row.title.startswith(row.brand)
    assert (items["price"] > 0).all() and items["price"].nunique() > 50


def _write_all(out: Path) -> dict[str, object]:
    tables = {p.relative_to(out).as_posix(): pq.read_table(p) for p in sorted(out.rglob("*.parquet"))}
    arrays = {}
    for npz in sorted((out / "truth").glob("*.npz")):
        with np.load(npz) as data:
            arrays |= {f"{npz.name}:{k}": data[k] for k in data.files}
    manifest = json.loads((out / "manifest.json").read_text())
    for varies in ("seconds", "events_per_second", "config"):  # the config names the output folder
        manifest.pop(varies)
    return {"tables": tables, "arrays": arrays, "manifest": manifest}


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    small = GenerateConfig(users=300, items=100, events=12_345, seed=3, chunk_events=4_000)
    runs = [_write_all(Path(generate(replace(small, out=tmp_path / name)).out)) for name in ("a", "b")]
    other = _write_all(Path(generate(replace(small, seed=4, out=tmp_path / "c")).out))
    first, second = runs
    assert first["tables"].keys() == second["tables"].keys()
    assert len([k for k in first["tables"] if k.startswith("events/")]) >= 3
    for name, table in first["tables"].items():
        assert table.equals(second["tables"][name]), name
    for name, array in first["arrays"].items():
        np.testing.assert_array_equal(array, second["arrays"][name])
    assert first["manifest"] == second["manifest"]
    assert not first["tables"]["events/part-00000.parquet"].equals(
        other["tables"]["events/part-00000.parquet"]
    )
    # exact event count across several trimmed blocks, and no PII without the flag
    assert sum(t.num_rows for k, t in first["tables"].items() if k.startswith("events/")) == 12_345
    assert first["tables"]["users.parquet"].column_names == ["user_id", "signup_time", "region"]


def test_a_rerun_in_the_same_folder_replaces_the_old_parts(tmp_path: Path) -> None:
    cfg = GenerateConfig(users=300, items=100, events=9_000, seed=1, chunk_events=2_000, out=tmp_path)
    generate(cfg)
    result = generate(replace(cfg, events=3_000))
    assert len(list((tmp_path / "events").glob("*.parquet"))) == result.parts
    assert len(pd.read_parquet(tmp_path / "events")) == 3_000


def test_pii_columns_look_real(users: pd.DataFrame) -> None:
    assert users["email"].str.fullmatch(r"[a-z]+\.[a-z]+\d+@example\.com").all()
    assert users["phone"].str.fullmatch(r"\+1-555-\d{3}-\d{4}").all()
    assert (users["full_name"].str.split().str.len() == 2).all()
    assert users["address"].str.match(r"\d+ \w+").all()


def _funnel_groups(events: pd.DataFrame) -> pd.DataFrame:
    """Per (session, item): event count and first time of each funnel step."""
    grouped = events.groupby(["session_id", "item_id", "event_type"])["timestamp"].agg(["size", "min"])
    return grouped.unstack("event_type")


def test_funnel_is_ordered_with_realistic_rates(events: pd.DataFrame, items: pd.DataFrame) -> None:
    funnel = _funnel_groups(events)
    sizes, first = funnel["size"].fillna(0), funnel["min"]
    for earlier, later in zip(EVENT_NAMES, EVENT_NAMES[1:], strict=False):
        assert (sizes[earlier] >= sizes[later]).all(), (earlier, later)
        has_later = sizes[later] > 0
        assert (first.loc[has_later, earlier] <= first.loc[has_later, later]).all(), (earlier, later)
    n = events["event_type"].value_counts()
    assert 0.03 <= n["click"] / n["view"] <= 0.12
    assert 0.10 <= n["cart"] / n["click"] <= 0.40
    assert 0.30 <= n["purchase"] / n["cart"] <= 0.70
    browse = events["event_type"].isin(["view", "click"])
    assert (events.loc[browse, "quantity"] == 1).all() and (events.loc[~browse, "quantity"] >= 1).all()
    assert events.loc[~browse, "quantity"].max() > 1


def test_prices_vary_around_list_price_and_discounts_sell(events: pd.DataFrame, items: pd.DataFrame) -> None:
    list_price = events["item_id"].map(items.set_index("item_id")["price"])
    ratio = events["price"] / list_price
    assert ratio.between(0.69, 1.0).all()
    discounted = ratio < 0.99
    assert 0.1 < discounted.mean() < 0.4
    views, clicks = (events[events["event_type"] == kind] for kind in ("view", "click"))
    clicked = views.set_index(["session_id", "item_id"]).index.isin(
        clicks.set_index(["session_id", "item_id"]).index
    )
    view_discounted = discounted[views.index].to_numpy()
    assert clicked[view_discounted].mean() > 1.1 * clicked[~view_discounted].mean()
    carts = events[events["event_type"] == "cart"]
    bought = events[events["event_type"] == "purchase"].set_index(["session_id", "item_id"]).index
    converted = carts.set_index(["session_id", "item_id"]).index.isin(bought)
    cart_discounted = discounted[carts.index].to_numpy()
    assert converted[cart_discounted].mean() > converted[~cart_discounted].mean()  # price sensitivity


def test_popularity_has_a_long_tail(events: pd.DataFrame) -> None:
    counts = events["item_id"].value_counts()
    top = counts.iloc[: len(counts) // 10].sum()
    assert top / counts.sum() > 0.5


def _top_categories(truth_dir: Path, user_ids: pd.Series, k: int) -> np.ndarray:
    truth = load_truth(truth_dir)
    return np.argsort(-truth.category_affinity[truth.user_index(user_ids.to_numpy())], axis=1)[:, :k]


def test_purchases_follow_each_users_category_taste(
    shop: tuple[GenerateResult, Path], events: pd.DataFrame, items: pd.DataFrame
) -> None:
    purchases = events[events["event_type"] == "purchase"]
    category = purchases["item_id"].map(items.set_index("item_id")["category"])
    codes = category.map({c: i for i, c in enumerate(load_truth(shop[1]).categories)}).to_numpy()
    top = _top_categories(shop[1], purchases["user_id"], 2)
    in_top = (top == codes[:, None]).any(axis=1).mean()
    shuffled = (top[np.random.default_rng(0).permutation(len(top))] == codes[:, None]).any(axis=1).mean()
    assert in_top > 0.6 and in_top > 2 * shuffled


def test_a_taste_aware_recommender_beats_global_popularity(events: pd.DataFrame, items: pd.DataFrame) -> None:
    """Popularity weighted by each user's category mix (from the first 80% of the time) finds the items users
    engage with (click/cart/purchase) in the last 20% far better than the shop's bestsellers; with random
    tastes it does worse."""
    events = events.assign(category=events["item_id"].map(items.set_index("item_id")["category"]))
    cut = events["timestamp"].quantile(0.8)
    train, test = events[events["timestamp"] < cut], events[events["timestamp"] >= cut]
    test = test[(test["event_type"] != "view") & test["user_id"].isin(train["user_id"])]
    test = test.drop_duplicates(["user_id", "item_id"])
    popularity = train["item_id"].value_counts()
    mix = pd.crosstab(train["user_id"], train["category"])
    mix = mix.div(mix.sum(axis=1), axis=0)
    item_category = mix.columns.get_indexer(popularity.index.map(items.set_index("item_id")["category"]))
    scores = mix.to_numpy()[:, item_category] * popularity.to_numpy()
    top = popularity.index.to_numpy()[np.argsort(-scores, axis=1)[:, :10]]
    recommended = dict(zip(mix.index, map(set, top), strict=True))
    taste = np.mean([i in recommended[u] for u, i in zip(test["user_id"], test["item_id"], strict=True)])
    shop_wide = test["item_id"].isin(popularity.index[:10]).mean()
    assert len(test) > 200 and taste > 1.25 * shop_wide


def test_truth_scores_what_users_do(shop: tuple[GenerateResult, Path], events: pd.DataFrame) -> None:
    truth = load_truth(shop[1])
    assert load_truth(shop[1] / "truth").utility_std == truth.utility_std
    bought = events[events["event_type"] == "purchase"]
    rng = np.random.default_rng(0)
    random_items = [f"i{i:06d}" for i in rng.integers(0, CONFIG.items, len(bought))]
    bought_u = truth.utility(bought["user_id"].to_numpy(), bought["item_id"].to_numpy())
    random_u = truth.utility(bought["user_id"].to_numpy(), random_items)
    assert bought_u.mean() > random_u.mean() + 1.5 * truth.utility_std / 2
    p = truth.purchase_probability(bought["user_id"].to_numpy(), bought["item_id"].to_numpy())
    assert ((p > 0) & (p < 1)).all()
    assert p.mean() > truth.purchase_probability(bought["user_id"].to_numpy(), random_items).mean() * 3
    # one user against the whole catalogue: broadcasting, and rows are the same as pairwise calls
    all_items = np.array([f"i{i:06d}" for i in range(CONFIG.items)])
    row = truth.utility(["u0000005"], all_items)
    assert row.shape == (CONFIG.items,)
    np.testing.assert_allclose(row, truth.utility(["u0000005"] * CONFIG.items, all_items))
    with pytest.raises(KeyError):
        truth.utility(["u9999999"], ["i000001"])
    with pytest.raises(KeyError):
        truth.utility(["x0000001"], ["i000001"])


def test_sessions_belong_to_one_user_and_last_under_two_hours(events: pd.DataFrame) -> None:
    sessions = events.groupby("session_id").agg(
        users=("user_id", "nunique"),
        start=("timestamp", "min"),
        end=("timestamp", "max"),
        n=("item_id", "size"),
    )
    assert (sessions["users"] == 1).all()
    assert (sessions["end"] - sessions["start"]).max() <= pd.Timedelta(hours=2)
    assert sessions["n"].mean() > 3 and (sessions["n"] > 10).any()
    per_user = sessions.join(events.groupby("session_id")["user_id"].first()).groupby("user_id").size()
    assert per_user.max() > 5  # users come back


def test_hours_and_weekdays_have_a_rhythm(events: pd.DataFrame) -> None:
    hours = events["timestamp"].dt.hour.value_counts()
    assert hours.max() / hours.min() > 1.8
    days = events["timestamp"].dt.floor("D")
    per_day = days.value_counts()
    weekend = per_day[per_day.index.dayofweek >= 5].mean()
    weekday = per_day[per_day.index.dayofweek < 5].mean()
    assert weekend > 1.15 * weekday


def test_users_and_items_arrive_over_time_and_no_event_precedes_them(
    shop: tuple[GenerateResult, Path], events: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame
) -> None:
    manifest = json.loads((shop[1] / "manifest.json").read_text())
    start, end = (pd.Timestamp(manifest["period"][k]) for k in ("start", "end"))
    assert start == pd.Timestamp("2026-01-02", tz="UTC") and end == pd.Timestamp("2026-07-01", tz="UTC")
    assert events["timestamp"].min() >= start and events["timestamp"].max() < end
    for arrivals in (users["signup_time"], items["created_at"]):
        during = arrivals >= start
        assert 0.2 < during.mean() < 0.5 and (arrivals < end).all()
        assert arrivals[during].dt.month.nunique() == 6  # spread over the period
    assert set(events["item_id"]) <= set(items["item_id"]) and set(events["user_id"]) <= set(users["user_id"])
    signup = events["user_id"].map(users.set_index("user_id")["signup_time"])
    created = events["item_id"].map(items.set_index("item_id")["created_at"])
    assert (events["timestamp"] >= signup).all() and (events["timestamp"] >= created).all()
    late_items = items.loc[items["created_at"] > start + pd.Timedelta(days=30), "item_id"]
    assert events["item_id"].isin(late_items).any()  # new items do get traffic


def test_reviews_follow_purchases_and_rate_by_taste(
    shop: tuple[GenerateResult, Path], events: pd.DataFrame
) -> None:
    reviews = pd.read_parquet(shop[1] / "reviews.parquet")
    assert len(reviews) > 50
    first_purchase = (
        events[events["event_type"] == "purchase"].groupby(["user_id", "item_id"])["timestamp"].min()
    )
    key = pd.MultiIndex.from_frame(reviews[["user_id", "item_id"]])
    assert key.isin(first_purchase.index).all() and key.is_unique
    assert (reviews["timestamp"].to_numpy() > first_purchase.loc[key].to_numpy()).all()
    assert reviews["rating"].isin([1.0, 2.0, 3.0, 4.0, 5.0]).all() and reviews["rating"].nunique() >= 3
    assert (reviews["text"].str.len() > 10).all()
    utility = load_truth(shop[1]).utility(reviews["user_id"].to_numpy(), reviews["item_id"].to_numpy())
    assert np.corrcoef(utility, reviews["rating"])[0, 1] > 0.3


def test_consumables_are_bought_again_durables_once(events: pd.DataFrame, items: pd.DataFrame) -> None:
    purchases = events[events["event_type"] == "purchase"]
    sessions = purchases.groupby(["user_id", "item_id"])["session_id"].nunique()
    again = sessions[sessions > 1].index.get_level_values("item_id")
    category = items.set_index("item_id")["category"]
    assert len(again) >= 20  # 11 without staples (seed 7)
    assert set(category[again]) <= {"Beauty", "Grocery", "Pet Supplies", "Health"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"items": 5}, "items must be at least 10"),
        ({"start": "1999-06-01"}, "on or after 2000-01-01"),
        ({"start": "2999-01-01"}, "end in the past"),
        ({"start": "June"}, "not a date"),
        ({"chunk_events": 10}, "chunk_events"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(GenerateError, match=message):
        generate(replace(CONFIG, out=tmp_path, **change))


def test_cli_help_and_json(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(generate_command, ["--help"])
    assert shown.exit_code == 0
    for option in ("--users", "--items", "--events", "--seed", "--out", "--start", "--days", "--with-pii"):
        assert option in shown.output
    args = ["--users", "200", "--items", "50", "--events", "3000", "--seed", "5", "--out", str(tmp_path)]
    ran = runner.invoke(generate_command, [*args, "--start", "2025-03-01", "--days", "30", "--json"])
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.stdout)
    assert result["events"] == 3000 and sum(result["event_types"].values()) == 3000
    assert result["paths"]["items"] == str(tmp_path / "items.parquet")
    stamps = pd.read_parquet(tmp_path / "events")["timestamp"]
    assert stamps.min() >= pd.Timestamp("2025-03-01", tz="UTC") and stamps.max() < pd.Timestamp(
        "2025-03-31", tz="UTC"
    )
    refused = runner.invoke(generate_command, [*args, "--start", "1999-12-01"])
    assert refused.exit_code == 1 and "error: the period must start on or after 2000-01-01" in refused.output
    assert runner.invoke(generate_command, [*args, "--items", "3"]).exit_code == 2  # a usage error
