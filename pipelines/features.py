"""Features stage: point-in-time user/item feature snapshots, registered and served through Feast.

In:  ``splits/train.parquet`` (canonical interactions, the training split only: features never see test
     events; price, quantity, session_id and event types are used when present) and
     ``validated/items.parquet`` (item_id plus optional category/category_path/genres/brand/year/price).
Out: Parquet offline sources under ``cfg.paths.features`` (rows stamped ``event_timestamp``), a Feast registry
     and an online store (SQLite file, or Redis) holding the latest snapshot of every user and item, and
     ``reports/features.json``.

Snapshots are cumulative: the one stamped ``t`` is computed only from events at or before ``t``, so a Feast
point-in-time join at ``as_of`` (latest snapshot <= as_of) never leaks later events. They are built in one
pass over the time-sorted events: each interval between snapshot times is aggregated once (``np.bincount``
over int codes) and added to running totals, so the cost is linear in events plus one row per entity and
snapshot.
Training code reads features with ``training_features`` (one ``as_of``) or ``point_in_time_features`` (one
time per row), serving with ``online_user_features`` / ``online_item_features``.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_repo.definitions import (
    ITEM_STATS_FILE,
    ITEM_STATS_SCHEMA,
    TIMESTAMP_FIELD,
    TUNING_DIR,
    TUNING_SUFFIX,
    USER_PROFILE_FILE,
    USER_PROFILE_SCHEMA,
    FeatureRepo,
    feature_objects,
)
from fusionrec.config import RunConfig
from pipelines.offline_store import load_postgres_tables, offline_store_config
from pipelines.schema import CATEGORY_SEPARATOR, RATING_RANGE
from pipelines.stage import StageInputError, StageResult

if TYPE_CHECKING:
    import feast

log = logging.getLogger(__name__)

MAX_SNAPSHOTS = 40  # the finest calendar grid (daily, weekly, monthly, ...) with fewer cuts than this wins
CATEGORY_BUCKETS = 32  # hashed one-hot width for categorical features: fixed, no vocabulary to keep in sync
WINDOW_DAYS = (7, 30)  # item popularity windows: popularity_7d, popularity_30d
ONLINE_WRITE_BATCH = (
    10_000  # rows per online-store write while materializing (bounds memory, pipelines Redis)
)
USER_FEATURES = [f.name for f in USER_PROFILE_SCHEMA]
ITEM_FEATURES = [f.name for f in ITEM_STATS_SCHEMA]
FAVOURITES = ["favourite_category", "favourite_category_2", "favourite_category_3"]

# Columns of the dense matrices returned by `training_features` (numeric block, then hashed one-hot blocks).
_USER_NUMERIC = [
    "n_interactions",
    "n_items",
    "n_ratings",
    "n_purchases",
    "n_orders",
    "monetary",
    "mean_rating",
    "recency_days",
    "active_days",
    "n_sessions",
    "events_per_session",
    "session_minutes",
    "purchase_view_ratio",
]
_ITEM_NUMERIC = [
    "popularity",
    "popularity_7d",
    "popularity_30d",
    "n_users",
    "n_purchases",
    "conversion_rate",
    "mean_rating",
    "year",
    "price",
]
# The three favourite categories share one block, weighted 3:2:1 by rank and normalised to sum 1 per user.
_RANK_WEIGHTS = np.array([3.0, 2.0, 1.0])
USER_MATRIX_COLUMNS = _USER_NUMERIC + [f"favourite_category#{b}" for b in range(CATEGORY_BUCKETS)]
ITEM_MATRIX_COLUMNS = (
    _ITEM_NUMERIC
    + [f"brand#{b}" for b in range(CATEGORY_BUCKETS)]
    + [f"category#{b}" for b in range(CATEGORY_BUCKETS)]
)

_DAY_NS = 86_400 * 10**9
_VIEW_TYPES = ("view", "click")  # what conversion rates divide by


@dataclass
class FeaturesResult(StageResult):
    user_rows: int  # users in the online store (latest snapshot)
    item_rows: int  # items in the online store (latest snapshot)
    user_features: list[str]
    item_features: list[str]
    online_store: str  # "sqlite" or "redis"
    registry: str  # path of the Feast registry
    materialized_until: str  # ISO timestamp
    project: str  # Feast project name (unique per home on Redis)
    snapshots: int  # snapshot timestamps written to the offline sources
    seconds: float  # wall time of the stage
    compute_seconds: float = 0.0  # of which: snapshots of both splits written
    materialize_seconds: float = 0.0  # of which: Feast apply + materialization into the online store
    offline_store: str = "file"  # "file", "postgres" or "spark"


# ---------------------------------------------------------------------------------------------- Feast store


def feast_project(cfg: RunConfig) -> str:
    """``fusionrec`` on SQLite and files (one store per home); on a shared Redis or PostgreSQL, suffixed by a
    hash of the home."""
    if cfg.online_store != "redis" and cfg.offline_store != "postgres":
        return "fusionrec"
    return "fusionrec_" + hashlib.sha1(str(cfg.home).encode()).hexdigest()[:10]


def redis_connection_string(url: str) -> str:
    """``redis://[:password@]host:port/db`` -> Feast's ``host:port,db=N[,password=...]``; Feast form passes."""
    if "://" not in url:
        return url
    parsed = urlparse(url)
    db = (parsed.path or "/0").lstrip("/") or "0"
    parts = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}", f"db={db}"]
    if parsed.password:
        parts.append(f"password={parsed.password}")
    return ",".join(parts)


def feature_store(cfg: RunConfig) -> feast.FeatureStore:
    """A Feast store configured in code from ``cfg``: file registry under ``cfg.paths.features``, offline store
    per ``cfg.offline_store`` (pipelines/offline_store.py), online store SQLite (``online.db`` there) or Redis
    (``cfg.redis_url``)."""
    from feast import FeatureStore, RepoConfig

    features_dir = cfg.paths.features
    features_dir.mkdir(parents=True, exist_ok=True)
    if cfg.online_store == "redis":
        online: dict[str, Any] = {
            "type": "redis",
            "connection_string": redis_connection_string(cfg.redis_url),
            # A build clears the project's keys first and writes one row per entity: no stale row to guard
            # against, so skip Feast's read-timestamps-before-write round trip.
            "skip_dedup": True,
        }
    else:
        online = {"type": "sqlite", "path": str(features_dir / "online.db")}
    config = RepoConfig(
        project=feast_project(cfg),
        provider="local",
        registry=str(features_dir / "registry.db"),
        offline_store=offline_store_config(cfg),
        online_store=online,
        materialization={"online_write_batch_size": ONLINE_WRITE_BATCH},
        entity_key_serialization_version=3,
        repo_path=features_dir,
    )
    return FeatureStore(config=config, repo_path=str(features_dir))


# ---------------------------------------------------------------------------------------------- inputs


def snapshot_times(timestamps: pd.Series, max_snapshots: int = MAX_SNAPSHOTS) -> list[pd.Timestamp]:
    """Calendar cut points strictly inside (first, last] of ``timestamps``, plus the last timestamp itself.

    The finest of daily/weekly/monthly/quarterly/yearly grids giving fewer than ``max_snapshots`` cuts is used,
    so the number of snapshots stays small whatever the span of the data.
    """
    first, last = timestamps.min(), timestamps.max()
    cuts = pd.DatetimeIndex([], tz=last.tz)
    for freq in ("D", "W-MON", "MS", "QS", "YS"):
        grid = pd.date_range(first.floor("D"), last, freq=freq)
        cuts = grid[(grid > first) & (grid < last)]
        if len(cuts) < max_snapshots:
            break
    return [*cuts, last]


def _present(frame: pd.DataFrame, column: str) -> pd.Series:
    """``frame[column]`` as stripped strings with blanks as missing (all missing if the column is absent)."""
    if column not in frame:
        return pd.Series(pd.NA, index=frame.index, dtype=object)
    text = frame[column].astype("string").str.strip()
    return text.mask(text == "").astype(object)


def item_catalogue(items: pd.DataFrame | None, train: pd.DataFrame) -> pd.DataFrame:
    """One row per known item (catalogue plus any ``train`` item id), sorted by id: item_id, category (the
    item's category, else its first genre, else the top of its category path; '' if none), brand ('' if
    unknown), year (Int64) and list price (null if unknown)."""
    cat = items.copy() if items is not None else pd.DataFrame({"item_id": pd.Series(dtype=str)})
    cat["item_id"] = cat["item_id"].astype(str)
    category = _present(cat, "category")
    if "genres" in cat:
        category = category.fillna(_present(cat, "genres").str.split("|").str[0])
    if "category_path" in cat:
        category = category.fillna(_present(cat, "category_path").str.split(CATEGORY_SEPARATOR).str[0])
    cat["category"] = category.fillna("").astype(str).str.strip()
    cat["brand"] = _present(cat, "brand").fillna("").astype(str)
    cat["year"] = pd.to_numeric(cat["year"], errors="coerce") if "year" in cat else np.nan
    cat["price"] = pd.to_numeric(cat["price"], errors="coerce") if "price" in cat else np.nan
    cat = cat[["item_id", "category", "brand", "year", "price"]].drop_duplicates("item_id")
    missing = pd.DataFrame({"item_id": sorted(set(train["item_id"].astype(str)) - set(cat["item_id"]))})
    cat = pd.concat([cat, missing], ignore_index=True)
    cat[["category", "brand"]] = cat[["category", "brand"]].fillna("")
    cat["year"] = cat["year"].astype("float64").round().astype("Int64")
    cat["price"] = cat["price"].astype("float64")
    return cat.sort_values("item_id", ignore_index=True)


class _SplitFile:
    """One split's Parquet file, read one column at a time (strings dictionary-encoded: int codes, not Python
    strings), so a shop-sized split never sits in memory whole."""

    def __init__(self, cfg: RunConfig, name: str):
        path = cfg.paths.splits / f"{name}.parquet"
        if not path.exists():
            raise StageInputError(f"features: no {name} split at {path}; run the split stage first")
        schema = pq.read_schema(path)
        self.types = {field.name: field.type for field in schema}
        strings = [column for column, kind in self.types.items() if pa.types.is_string(kind)]
        self.file = pq.ParquetFile(path, read_dictionary=strings)
        self.rows = self.file.metadata.num_rows
        if self.rows == 0:
            raise StageInputError(f"features: {name} split {path} is empty")

    def column(self, name: str) -> pa.ChunkedArray | None:
        return self.file.read(columns=[name]).column(0) if name in self.types else None

    def categorical(self, name: str) -> pd.Categorical:
        """A column as a pandas Categorical of strings (code -1 for null); all null when absent."""
        values = self.column(name)
        if values is None:
            return pd.Categorical.from_codes(np.full(self.rows, -1), categories=pd.Index([], dtype=object))
        if not (pa.types.is_dictionary(values.type) and pa.types.is_string(values.type.value_type)):
            values = pc.dictionary_encode(values.cast(pa.string()))
        return values.to_pandas().array

    def floats(self, name: str) -> np.ndarray:
        """A numeric column as float64 (NaN for null); all NaN when absent."""
        values = self.column(name)
        if values is None:
            return np.full(self.rows, np.nan)
        return values.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _read_items(cfg: RunConfig) -> pd.DataFrame | None:
    items_path = cfg.paths.validated / "items.parquet"
    if not items_path.exists():
        log.warning("features: no item table at %s; item attributes left empty", items_path)
        return None
    names = pq.read_schema(items_path).names
    wanted = ["item_id", "category", "category_path", "genres", "brand", "year", "price"]
    return pd.read_parquet(items_path, columns=[c for c in wanted if c in names])


# ---------------------------------------------------------------------------------------------- events


@dataclass
class _Events:
    """One split's events as int codes and arrays sorted by time: what the snapshot builders aggregate."""

    user_ids: np.ndarray  # sorted distinct user ids; ``user`` indexes it
    category_names: np.ndarray  # sorted distinct item categories; ``category`` indexes it
    timestamp: np.ndarray  # int64 ns since the epoch, ascending
    user: np.ndarray  # int32 user code
    item: np.ndarray  # int32 row of the catalogue
    category: np.ndarray  # int32 category code of the item, -1 without
    rating: np.ndarray  # explicit rating (float32), NaN without
    has_rating: np.ndarray
    price: np.ndarray  # unit price at event time, NaN without
    has_price: np.ndarray
    is_purchase: np.ndarray
    is_view: np.ndarray  # view or click
    # purchases: price (the event's, else the catalogue's, else 0) x quantity (1 if missing); other events: 0
    spend: np.ndarray
    new_pair: np.ndarray  # first event of its (user, item) pair
    in_session: np.ndarray
    new_session: np.ndarray  # first event of its (user, session)
    new_order: np.ndarray  # first purchase of its (user, session)
    session_minutes: np.ndarray  # minutes since the previous event of the same session (0 for the first)


def _sorted_codes(values: pd.Categorical) -> tuple[np.ndarray, np.ndarray]:
    """int32 codes (-1 for null) into the sorted distinct values, and those values."""
    names = np.asarray(values.categories.astype(str), dtype=object)
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(order) + 1, dtype=np.int32)
    rank[order] = np.arange(len(order))
    rank[-1] = -1  # code -1 (null) picks this
    return rank[values.codes], names[order]


def _is_in(values: pd.Categorical, accepted: Sequence[str]) -> np.ndarray:
    """Per row: is the value one of ``accepted`` (null: no)."""
    lookup = np.append(np.isin(np.asarray(values.categories, dtype=object), list(accepted)), False)
    return lookup[values.codes]  # code -1 picks the trailing False


def _first_occurrence(key: np.ndarray) -> np.ndarray:
    """True at the first row of each distinct key (rows are in time order)."""
    return ~pd.Series(key).duplicated().to_numpy()


def _session_parts(
    user: np.ndarray, session: np.ndarray, timestamp: np.ndarray, is_purchase: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event (time-ordered): first of its (user, session), first purchase of it, and minutes since the
    previous event of the session. A session's duration up to ``t`` is the sum of its gaps up to ``t``, so
    durations accumulate interval by interval like counts."""
    key = np.where(session >= 0, user.astype(np.int64) * (int(session.max()) + 1) + session, -1)
    by_session = np.argsort(key, kind="stable")  # each session's events together, still in time order
    grouped = key[by_session]
    same = np.zeros(len(key), dtype=bool)
    same[1:] = (grouped[1:] == grouped[:-1]) & (grouped[1:] >= 0)
    gaps = np.zeros(len(key))
    stamps = timestamp[by_session]
    gaps[1:] = np.where(same[1:], (stamps[1:] - stamps[:-1]) / 60e9, 0.0)
    minutes = np.empty(len(key))
    minutes[by_session] = gaps
    new_session = np.empty(len(key), dtype=bool)
    new_session[by_session] = ~same & (grouped >= 0)
    new_order = is_purchase & (key >= 0) & _first_occurrence(np.where(is_purchase, key, -1))
    return new_session, new_order, minutes


def _events(split: _SplitFile, catalogue: pd.DataFrame) -> _Events:
    """One split as time-sorted arrays, built a column at a time; every item id must be in ``catalogue``."""
    stamps = (
        pd.DatetimeIndex(pd.to_datetime(split.column("timestamp").to_pandas(), utc=True)).as_unit("ns").asi8
    )
    order = np.argsort(stamps, kind="stable")
    timestamp = stamps[order]
    del stamps
    user, user_ids = _sorted_codes(split.categorical("user_id"))
    user = user[order]
    items = split.categorical("item_id")
    rows = np.append(pd.Index(catalogue["item_id"]).get_indexer(items.categories.astype(str)), -1)
    item = rows.astype(np.int32)[items.codes][order]
    del items
    kinds = split.categorical("event_type")
    is_purchase, is_view = _is_in(kinds, ["purchase"])[order], _is_in(kinds, _VIEW_TYPES)[order]
    rating = split.floats("rating")[order].astype(np.float32)
    price = split.floats("price")[order]
    quantity = split.floats("quantity")[order]
    unit_price = np.where(np.isnan(price), catalogue["price"].to_numpy()[item], price)
    spend = np.where(
        is_purchase, np.nan_to_num(unit_price) * np.where(np.isnan(quantity), 1.0, quantity), 0.0
    )
    del unit_price, quantity
    session = split.categorical("session_id").codes.astype(np.int64)[order]
    del order
    new_session, new_order, session_minutes = _session_parts(user, session, timestamp, is_purchase)
    category = catalogue["category"]
    category_code, category_names = pd.factorize(category.mask(category == ""), sort=True)
    return _Events(
        user_ids=user_ids,
        category_names=np.asarray(category_names, dtype=object),
        timestamp=timestamp,
        user=user,
        item=item,
        category=np.append(category_code, -1).astype(np.int32)[item],
        rating=rating,
        has_rating=~np.isnan(rating),
        price=price,
        has_price=~np.isnan(price),
        is_purchase=is_purchase,
        is_view=is_view,
        spend=spend,
        new_pair=_first_occurrence(user.astype(np.int64) * len(catalogue) + item),
        in_session=session >= 0,
        new_session=new_session,
        new_order=new_order,
        session_minutes=session_minutes,
    )


def _split_events(cfg: RunConfig, name: str, catalogue: pd.DataFrame) -> _Events:
    return _events(_SplitFile(cfg, name), catalogue)


# ---------------------------------------------------------------------------------------------- snapshots


def _intervals(ev: _Events, times: Sequence[pd.Timestamp]) -> Iterator[tuple[pd.Timestamp, slice]]:
    """Each snapshot time with the slice of events after the previous snapshot and at or before it."""
    ends = np.searchsorted(ev.timestamp, [t.value for t in times], side="right")
    starts = np.r_[0, ends[:-1]]
    for at, start, end in zip(times, starts, ends, strict=True):
        yield at, slice(int(start), int(end))


# Running sums per entity: name -> (event mask, event weight); None = every event / count 1.
_USER_SUMS = {
    "n_interactions": (None, None),
    "n_items": ("new_pair", None),
    "n_ratings": ("has_rating", None),
    "rating_sum": ("has_rating", "rating"),
    "n_purchases": ("is_purchase", None),
    "n_orders": ("new_order", None),
    "monetary": (None, "spend"),
    "n_views": ("is_view", None),
    "n_sessions": ("new_session", None),
    "session_events": ("in_session", None),
    "session_minutes_sum": (None, "session_minutes"),
}
_ITEM_SUMS = {
    "popularity": (None, None),
    "n_users": ("new_pair", None),
    "n_purchases": ("is_purchase", None),
    "n_views": ("is_view", None),
    "n_ratings": ("has_rating", None),
    "rating_sum": ("has_rating", "rating"),
    "n_prices": ("has_price", None),
    "price_sum": ("has_price", "price"),
}


class _RunningSums:
    """Per-entity totals of ``sums`` over the events added so far (``np.bincount`` per interval)."""

    def __init__(self, ev: _Events, key: str, size: int, sums: dict[str, tuple[str | None, str | None]]):
        self.ev, self.key, self.size, self.sums = ev, key, size, sums
        self.totals = {
            name: np.zeros(size, dtype=np.float64 if weight else np.int64)
            for name, (_, weight) in sums.items()
        }

    def add(self, part: slice) -> None:
        keys = getattr(self.ev, self.key)[part]
        for name, (mask, weight) in self.sums.items():
            rows = slice(None) if mask is None else getattr(self.ev, mask)[part]
            weights = None if weight is None else getattr(self.ev, weight)[part][rows]
            self.totals[name] += np.bincount(keys[rows], weights, minlength=self.size)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.totals[name]


class _TopCategories:
    """Running (user, category) event counts and each user's top 3 categories (ties: alphabetical)."""

    def __init__(self, ev: _Events):
        self.ev, self.n_users = ev, len(ev.user_ids)
        n_categories = max(len(ev.category_names), 1)
        has = ev.category >= 0
        pairs, inverse = np.unique(
            ev.user[has].astype(np.int64) * n_categories + ev.category[has], return_inverse=True
        )
        self.pair = np.full(len(ev.user), -1, dtype=np.int32)  # per event: its (user, category) pair
        self.pair[has] = inverse
        self.pair_user, self.pair_category = pairs // n_categories, pairs % n_categories
        self.counts = np.zeros(len(pairs), dtype=np.int64)
        self.top = np.full((self.n_users, len(FAVOURITES)), -1, dtype=np.int64)  # category codes by rank

    def add(self, part: slice) -> None:
        pair = self.pair[part]
        pair = pair[pair >= 0]
        if not len(pair):
            return
        self.counts += np.bincount(pair, minlength=len(self.counts))
        touched = np.zeros(self.n_users, dtype=bool)
        touched[self.pair_user[pair]] = True
        # the touched users' pairs seen so far (later ones have count 0), by user then category
        rows = np.flatnonzero(touched[self.pair_user] & (self.counts > 0))
        users = self.pair_user[rows]
        order = np.lexsort((-self.counts[rows], users))  # stable: equal counts stay alphabetical
        rows, users = rows[order], users[order]
        position = np.arange(len(rows))
        group_start = np.maximum.accumulate(np.where(np.r_[True, users[1:] != users[:-1]], position, 0))
        rank = position - group_start
        keep = rank < len(FAVOURITES)
        self.top[users[keep], rank[keep]] = self.pair_category[rows[keep]]

    def names(self, users: np.ndarray) -> list[np.ndarray]:
        """Favourite category names of ``users`` by rank ('' where the user has fewer categories)."""
        names = np.concatenate([[""], self.ev.category_names]).astype(object)
        return [names[self.top[users, r] + 1] for r in range(len(FAVOURITES))]


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    """numerator / denominator, ``empty`` where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1e-300), empty)


def _user_snapshots(ev: _Events, times: Sequence[pd.Timestamp]) -> Iterator[pd.DataFrame]:
    """Rows of ``user_profile``, one frame per snapshot time ``t``: every user with events up to ``t``."""
    sums, top = _RunningSums(ev, "user", len(ev.user_ids), _USER_SUMS), _TopCategories(ev)
    last = np.full(len(ev.user_ids), np.iinfo(np.int64).min)
    first = np.zeros(len(ev.user_ids), dtype=np.int64)
    first_rows = _first_occurrence(ev.user)
    first[ev.user[first_rows]] = ev.timestamp[first_rows]
    for at, part in _intervals(ev, times):
        sums.add(part)
        top.add(part)
        np.maximum.at(last, ev.user[part], ev.timestamp[part])
        users = np.flatnonzero(sums["n_interactions"])
        s = {name: total[users] for name, total in sums.totals.items()}
        frame = pd.DataFrame(
            {
                "user_id": ev.user_ids[users],
                TIMESTAMP_FIELD: at,
                **{c: s[c] for c in ("n_interactions", "n_items", "n_ratings", "n_purchases", "n_orders")},
                "monetary": s["monetary"],
                "mean_rating": _ratio(s["rating_sum"], s["n_ratings"], np.nan),
                "recency_days": (at.value - last[users]) / _DAY_NS,
                "active_days": (last[users] - first[users]) / _DAY_NS,
                "n_sessions": s["n_sessions"],
                "events_per_session": _ratio(s["session_events"], s["n_sessions"], np.nan),
                "session_minutes": _ratio(s["session_minutes_sum"], s["n_sessions"], np.nan),
                "purchase_view_ratio": _ratio(s["n_purchases"], s["n_views"], 0.0),
            }
        )
        frame[FAVOURITES] = np.column_stack(top.names(users)) if len(users) else ""
        yield frame[["user_id", TIMESTAMP_FIELD, *USER_FEATURES]]


def _item_snapshots(
    ev: _Events, catalogue: pd.DataFrame, times: Sequence[pd.Timestamp]
) -> Iterator[pd.DataFrame]:
    """Rows of ``item_stats``, one frame per snapshot time: the whole catalogue at the first and the last
    snapshot, in between only items whose statistics changed (an unchanged row adds nothing to a
    latest-row-at-or-before join; a complete last snapshot lets materialization read that snapshot alone)."""
    n_items = len(catalogue)
    sums = _RunningSums(ev, "item", n_items, _ITEM_SUMS)
    list_price = catalogue["price"].to_numpy()
    previous: np.ndarray | None = None
    for k, (at, part) in enumerate(_intervals(ev, times)):
        sums.add(part)
        # events in (at - days, at]: a contiguous slice of the time-sorted events
        starts = np.searchsorted(ev.timestamp, [at.value - days * _DAY_NS for days in WINDOW_DAYS], "right")
        windows = [np.bincount(ev.item[start : part.stop], minlength=n_items) for start in starts]
        state = np.column_stack([sums["popularity"], *windows])
        rows = np.arange(n_items)
        if previous is not None and k < len(times) - 1:
            rows = np.flatnonzero((state != previous).any(axis=1))
        previous = state
        frame = pd.DataFrame(
            {
                "item_id": catalogue["item_id"].to_numpy()[rows],
                TIMESTAMP_FIELD: at,
                "popularity": sums["popularity"][rows],
                **{f"popularity_{d}d": w[rows] for d, w in zip(WINDOW_DAYS, windows, strict=True)},
                "n_users": sums["n_users"][rows],
                "n_purchases": sums["n_purchases"][rows],
                "conversion_rate": _ratio(sums["n_purchases"][rows], sums["n_views"][rows], 0.0),
                "mean_rating": _ratio(sums["rating_sum"][rows], sums["n_ratings"][rows], np.nan),
                "category": catalogue["category"].to_numpy()[rows],
                "brand": catalogue["brand"].to_numpy()[rows],
                "year": catalogue["year"].array[rows],
                "price": np.where(
                    np.isnan(list_price[rows]),
                    _ratio(sums["price_sum"][rows], sums["n_prices"][rows], np.nan),
                    list_price[rows],
                ),
            }
        )
        yield frame[["item_id", TIMESTAMP_FIELD, *ITEM_FEATURES]]


_ARROW_TYPES = {"Int64": pa.int64(), "Float64": pa.float64(), "String": pa.string()}


def _arrow_schema(key: str, fields: Sequence[Any]) -> pa.Schema:
    """The Parquet schema of an offline source: join key, timestamp, then the Feast fields' types."""
    columns = [(key, pa.string()), (TIMESTAMP_FIELD, pa.timestamp("ns", tz="UTC"))]
    return pa.schema(columns + [(f.name, _ARROW_TYPES[str(f.dtype)]) for f in fields])


def _write_parquet(
    frames: Iterator[pd.DataFrame], path: Path, schema: pa.Schema, spark_readable: bool = False
) -> pd.DataFrame:
    """Stream ``frames`` into one Parquet file (a row group each); returns the last frame. Spark reads no
    nanosecond timestamps: ``spark_readable`` stores microseconds (snapshot times are whole days or event
    times, which carry no finer precision)."""
    writer, last = None, pd.DataFrame()
    try:
        for frame in frames:
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            if writer is None:
                coerce = (
                    {"coerce_timestamps": "us", "allow_truncated_timestamps": True} if spark_readable else {}
                )
                writer = pq.ParquetWriter(path, table.schema, **coerce)
            writer.write_table(table)
            last = frame
    finally:
        if writer is not None:
            writer.close()
    return last


@dataclass
class _Written:
    users: int  # users in the last snapshot
    items: int
    times: list[pd.Timestamp]


def _write_snapshots(
    ev: _Events, catalogue: pd.DataFrame, folder: Path, spark_readable: bool = False
) -> _Written:
    """Cumulative user/item snapshots of ``ev`` written as the offline sources in ``folder``."""
    stamps = pd.Series(pd.to_datetime(ev.timestamp[[0, -1]], utc=True))
    times = snapshot_times(stamps)
    folder.mkdir(parents=True, exist_ok=True)
    last_users = _write_parquet(
        _user_snapshots(ev, times),
        folder / USER_PROFILE_FILE,
        _arrow_schema("user_id", USER_PROFILE_SCHEMA),
        spark_readable,
    )
    last_items = _write_parquet(
        _item_snapshots(ev, catalogue, times),
        folder / ITEM_STATS_FILE,
        _arrow_schema("item_id", ITEM_STATS_SCHEMA),
        spark_readable,
    )
    return _Written(users=len(last_users), items=len(last_items), times=times)


# ---------------------------------------------------------------------------------------------- the stage


def _split_item_ids(cfg: RunConfig, name: str) -> pd.Index:
    return _SplitFile(cfg, name).categorical("item_id").categories.astype(str)


def offline_table_prefix(cfg: RunConfig) -> str:
    """Offline tables of one home share a database: ``<feast project>__<view>``."""
    return f"{feast_project(cfg)}__"


def repo_objects(cfg: RunConfig) -> FeatureRepo:
    """The Feast objects of ``cfg``'s home, their sources in its offline store."""
    return feature_objects(cfg.paths.features, cfg.offline_store, offline_table_prefix(cfg))


def _materialize(cfg: RunConfig, at: pd.Timestamp) -> pd.Timestamp:
    """Apply the Feast objects (replacing a previous build's online rows) and materialize the snapshot at
    ``at``, which holds every user and item: the online store gets exactly one row per entity."""
    out = cfg.paths.features
    store = feature_store(cfg)
    if (out / "registry.db").exists():
        # A rebuild replaces what the online store holds: Redis would keep rows of entities no longer present.
        store.teardown()
        store = feature_store(cfg)
    if cfg.offline_store == "postgres":
        load_postgres_tables(cfg, offline_table_prefix(cfg))
    store.apply(repo_objects(cfg).objects())
    until = at + pd.Timedelta(seconds=1)
    store.materialize(
        start_date=at.to_pydatetime(),
        end_date=until.to_pydatetime(),
        feature_views=["user_profile", "item_stats"],
    )
    return until


def build_features(cfg: RunConfig) -> FeaturesResult:
    """Compute user/item snapshots from the training split (and, for tuning, from the fit split alone), apply
    the Feast definitions and materialize the latest training snapshot into the online store. Returns (and
    saves to reports/features.json) a summary."""
    started = time.perf_counter()
    items = _read_items(cfg)
    known = _split_item_ids(cfg, "train").union(_split_item_ids(cfg, "fit"))
    catalogue = item_catalogue(items, pd.DataFrame({"item_id": known}))
    out = cfg.paths.features
    spark = cfg.offline_store == "spark"
    written = _write_snapshots(_split_events(cfg, "train", catalogue), catalogue, out, spark)
    # Tuning fits on `fit` and scores on `valid`: its features must not count the validation events.
    _write_snapshots(_split_events(cfg, "fit", catalogue), catalogue, out / TUNING_DIR, spark)
    computed = time.perf_counter()
    log.info(
        "features: %d snapshots of %d users and %d items computed in %.1fs",
        len(written.times), written.users, written.items, computed - started,
    )  # fmt: skip

    until = _materialize(cfg, written.times[-1])
    seconds = time.perf_counter() - started
    log.info(
        "features: applied and materialized into %s in %.1fs",
        cfg.online_store,
        seconds - (computed - started),
    )
    result = FeaturesResult(
        user_rows=written.users,
        item_rows=written.items,
        user_features=USER_FEATURES,
        item_features=ITEM_FEATURES,
        online_store=cfg.online_store,
        offline_store=cfg.offline_store,
        registry=str(out / "registry.db"),
        materialized_until=until.isoformat(),
        project=feast_project(cfg),
        snapshots=len(written.times),
        seconds=round(seconds, 3),
        compute_seconds=round(computed - started, 3),
        materialize_seconds=round(seconds - (computed - started), 3),
    )
    result.save(cfg.paths.reports, "features")
    return result


# ---------------------------------------------------------------------------------------------- reading


def _utc(value: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _historical(
    store: feast.FeatureStore, key: str, view: str, names: list[str], ids: Sequence[str], as_of: pd.Timestamp
) -> pd.DataFrame:
    """Point-in-time features of ``ids`` at ``as_of`` (one row per distinct id, indexed by id, NaN if none)."""
    unique = sorted(set(map(str, ids)))
    entity_df = pd.DataFrame({key: unique, TIMESTAMP_FIELD: as_of})
    refs = [f"{view}:{n}" for n in names]
    df = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    return df.drop_duplicates(key).set_index(key)[names]


def point_in_time_features(
    cfg: RunConfig, rows: pd.DataFrame, store: feast.FeatureStore | None = None, tuning: bool = False
) -> pd.DataFrame:
    """``rows`` (columns user_id, item_id, event_timestamp: one training example each) plus the features known
    at each row's own time, via Feast historical retrieval: per row, the latest snapshot at or before its
    ``event_timestamp``, so no event after that time reaches the row (an event stamped exactly at a snapshot
    time is in that snapshot: shift row times back a nanosecond to keep a row's own event out). Columns are
    named ``user_profile__<feature>`` and ``item_stats__<feature>`` (NaN where the entity had no snapshot yet);
    ``tuning`` reads the fit-split views. Feast's file store joins every snapshot of each requested entity,
    so this suits evaluation sets and tests rather than every event of a shop."""
    store = store or feature_store(cfg)
    out = rows.copy()
    stamps = pd.to_datetime(rows[TIMESTAMP_FIELD], utc=True)
    suffix = TUNING_SUFFIX if tuning else ""
    for key, view, names in (
        ("user_id", "user_profile", USER_FEATURES),
        ("item_id", "item_stats", ITEM_FEATURES),
    ):
        keys = pd.MultiIndex.from_arrays([rows[key].astype(str).to_numpy(), pd.DatetimeIndex(stamps)])
        codes, unique = pd.factorize(keys)  # Feast keeps one row per (key, time): ask once per pair
        entity_df = pd.DataFrame(
            {
                key: unique.get_level_values(0),
                TIMESTAMP_FIELD: unique.get_level_values(1),
                "_pair": range(len(unique)),
            }
        )
        refs = [f"{view}{suffix}:{n}" for n in names]
        found = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
        # The file store drops a pair whose snapshots are all later than its time: reindex brings it back (NaN).
        found = found.drop_duplicates("_pair").set_index("_pair").reindex(range(len(unique)))
        for name in names:
            out[f"{view}__{name}"] = found[name].to_numpy()[codes]
    return out


def _hashed_one_hot(values: pd.Series, weights: np.ndarray | None = None) -> np.ndarray:
    """Stable (crc32) hashed one-hot of strings into CATEGORY_BUCKETS columns, each row scaled by its weight
    (default 1); '' / missing -> all zeros."""
    out = np.zeros((len(values), CATEGORY_BUCKETS), dtype=np.float32)
    codes, uniques = pd.factorize(values.fillna("").astype(str))
    buckets = np.array(
        [zlib.crc32(v.encode()) % CATEGORY_BUCKETS if v else -1 for v in uniques], dtype=np.int64
    )
    bucket = buckets[codes] if len(codes) else np.zeros(0, dtype=np.int64)
    rows = np.flatnonzero(bucket >= 0)
    out[rows, bucket[rows]] = 1.0 if weights is None else weights[rows]
    return out


def _favourites_block(frame: pd.DataFrame) -> np.ndarray:
    """The three favourite categories in one hashed block, weighted 3:2:1 by rank, summing to 1 per user."""
    present = np.column_stack([frame[c].fillna("").astype(str).ne("").to_numpy() for c in FAVOURITES])
    weights = present * _RANK_WEIGHTS
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    return sum(_hashed_one_hot(frame[c], weights[:, r]) for r, c in enumerate(FAVOURITES))


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Fixed (data-independent) scaling, so a row does not depend on which other ids were requested."""
    x = pd.to_numeric(frame[column], errors="coerce").astype("float64").to_numpy()
    if column == "mean_rating":
        x = x / RATING_RANGE[1]
    elif column == "year":
        x = (x - 2000.0) / 25.0
    else:  # counts, day spans, money, minutes, ratios: heavy-tailed and non-negative
        x = np.log1p(np.clip(x, 0.0, None))
    return np.nan_to_num(x, nan=0.0)


def user_matrix(frame: pd.DataFrame) -> np.ndarray:
    """``user_profile`` rows -> float32 matrix with ``USER_MATRIX_COLUMNS``."""
    numeric = np.column_stack([_numeric(frame, c) for c in _USER_NUMERIC])
    return np.hstack([numeric, _favourites_block(frame)]).astype(np.float32)


def item_matrix(frame: pd.DataFrame) -> np.ndarray:
    """``item_stats`` rows -> float32 matrix with ``ITEM_MATRIX_COLUMNS``."""
    numeric = np.column_stack([_numeric(frame, c) for c in _ITEM_NUMERIC])
    blocks = [_hashed_one_hot(frame["brand"]), _hashed_one_hot(frame["category"])]
    return np.hstack([numeric, *blocks]).astype(np.float32)


def training_features(
    cfg: RunConfig,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    as_of: pd.Timestamp,
    store: feast.FeatureStore | None = None,
    tuning: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense float32 side features for ``user_ids`` and ``item_ids`` (rows aligned, duplicates allowed) as
    known at ``as_of``, via Feast historical retrieval. Columns: ``USER_MATRIX_COLUMNS`` and
    ``ITEM_MATRIX_COLUMNS`` (log1p counts/days/money, scaled rating/year, hashed one-hot categories and
    brand); ids without a snapshot at or before ``as_of`` get zero rows."""
    as_of = _utc(as_of)
    store = store or feature_store(cfg)
    suffix = TUNING_SUFFIX if tuning else ""
    specs = [
        ([str(u) for u in user_ids], "user_id", f"user_profile{suffix}", USER_FEATURES, user_matrix),
        ([str(i) for i in item_ids], "item_id", f"item_stats{suffix}", ITEM_FEATURES, item_matrix),
    ]
    matrices = []
    for ids, key, view, names, encode in specs:
        if not ids:
            matrices.append(encode(pd.DataFrame(columns=names)))
            continue
        matrices.append(encode(_historical(store, key, view, names, ids, as_of).reindex(ids)))
    return matrices[0], matrices[1]


def _online(
    cfg: RunConfig,
    store: feast.FeatureStore | None,
    view: str,
    key: str,
    names: list[str],
    ids: Sequence[str],
) -> dict[str, dict[str, Any]]:
    ids = [str(i) for i in ids]
    if not ids:
        return {}
    store = store or feature_store(cfg)
    refs = [f"{view}:{n}" for n in names]
    response = store.get_online_features(features=refs, entity_rows=[{key: i} for i in ids]).to_dict()
    return {i: {n: response[n][row] for n in names} for row, i in enumerate(response[key])}


def online_user_features(
    cfg: RunConfig, user_ids: Sequence[str], store: feast.FeatureStore | None = None
) -> dict[str, dict[str, Any]]:
    """Latest materialized ``user_profile`` features per user id (every feature None for unknown users)."""
    return _online(cfg, store, "user_profile", "user_id", USER_FEATURES, user_ids)


def online_item_features(
    cfg: RunConfig, item_ids: Sequence[str], store: feast.FeatureStore | None = None
) -> dict[str, dict[str, Any]]:
    """Latest materialized ``item_stats`` features per item id (every feature None for unknown items)."""
    return _online(cfg, store, "item_stats", "item_id", ITEM_FEATURES, item_ids)
