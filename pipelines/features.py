"""Features stage: point-in-time user/item feature snapshots, registered and served through Feast.

In:  ``splits/train.parquet`` (canonical interactions, the training split only: features never see test
     events) and ``validated/items.parquet`` (item_id plus optional title/genres/category/year/price).
Out: Parquet offline sources under ``cfg.paths.features`` (one row per entity per snapshot, column
     ``event_timestamp``), a Feast registry and an online store (SQLite file, or Redis) holding the latest
     snapshot of every user and item, and ``reports/features.json``.

Snapshots are cumulative: the one stamped ``t`` is computed only from events at or before ``t``, so a Feast
point-in-time join at ``as_of`` (latest snapshot <= as_of) never leaks later events. Training code reads
features with ``training_features`` (historical retrieval) and serving with ``online_user_features``.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from feature_repo.definitions import (
    ITEM_STATS_FILE,
    ITEM_STATS_SCHEMA,
    TIMESTAMP_FIELD,
    TUNING_DIR,
    TUNING_SUFFIX,
    USER_PROFILE_FILE,
    USER_PROFILE_SCHEMA,
    feature_objects,
)
from fusionrec.config import RunConfig
from pipelines.schema import RATING_RANGE
from pipelines.stage import StageInputError, StageResult

if TYPE_CHECKING:
    import feast

log = logging.getLogger(__name__)

MAX_SNAPSHOTS = 40  # the finest calendar grid (daily, weekly, monthly, ...) with fewer cuts than this wins
CATEGORY_BUCKETS = 32  # hashed one-hot width for categorical features: fixed, no vocabulary to keep in sync
USER_FEATURES = [f.name for f in USER_PROFILE_SCHEMA]
ITEM_FEATURES = [f.name for f in ITEM_STATS_SCHEMA]

# Columns of the dense matrices returned by `training_features` (numeric block, then hashed category one-hot).
_USER_NUMERIC = [
    "n_interactions",
    "n_items",
    "n_ratings",
    "n_purchases",
    "mean_rating",
    "recency_days",
    "active_days",
]
_ITEM_NUMERIC = ["popularity", "n_users", "mean_rating", "year", "price"]
USER_MATRIX_COLUMNS = _USER_NUMERIC + [f"favourite_category#{b}" for b in range(CATEGORY_BUCKETS)]
ITEM_MATRIX_COLUMNS = _ITEM_NUMERIC + [f"category#{b}" for b in range(CATEGORY_BUCKETS)]


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


# ---------------------------------------------------------------------------------------------- Feast store


def feast_project(cfg: RunConfig) -> str:
    """``fusionrec`` on SQLite (one store per home); on a shared Redis, suffixed by a hash of the home."""
    if cfg.online_store != "redis":
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
    """A Feast store configured in code from ``cfg``: file registry and offline store under
    ``cfg.paths.features``, online store SQLite (``online.db`` there) or Redis (``cfg.redis_url``)."""
    from feast import FeatureStore, RepoConfig

    features_dir = cfg.paths.features
    features_dir.mkdir(parents=True, exist_ok=True)
    if cfg.online_store == "redis":
        online: dict[str, Any] = {
            "type": "redis",
            "connection_string": redis_connection_string(cfg.redis_url),
        }
    else:
        online = {"type": "sqlite", "path": str(features_dir / "online.db")}
    config = RepoConfig(
        project=feast_project(cfg),
        provider="local",
        registry=str(features_dir / "registry.db"),
        offline_store={"type": "file"},
        online_store=online,
        entity_key_serialization_version=3,
        repo_path=features_dir,
    )
    return FeatureStore(config=config, repo_path=str(features_dir))


# ---------------------------------------------------------------------------------------------- snapshots


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


def item_catalogue(items: pd.DataFrame | None, train: pd.DataFrame) -> pd.DataFrame:
    """One row per known item (catalogue plus any train item): item_id, category ('' if unknown), year, price."""
    cat = items.copy() if items is not None else pd.DataFrame({"item_id": pd.Series(dtype=str)})
    cat["item_id"] = cat["item_id"].astype(str)
    category = cat["category"] if "category" in cat else pd.Series(pd.NA, index=cat.index, dtype=object)
    if "genres" in cat:  # items without a category fall back to their first genre
        category = category.fillna(cat["genres"].str.split("|").str[0])
    cat["category"] = category.fillna("").astype(str).str.strip()
    cat["year"] = pd.to_numeric(cat["year"], errors="coerce").astype("Int64") if "year" in cat else pd.NA
    cat["price"] = (
        pd.to_numeric(cat["price"], errors="coerce").astype("float64") if "price" in cat else np.nan
    )
    cat = cat[["item_id", "category", "year", "price"]].drop_duplicates("item_id")
    missing = pd.DataFrame({"item_id": sorted(set(train["item_id"]) - set(cat["item_id"]))})
    cat = pd.concat([cat, missing], ignore_index=True)
    cat["category"] = cat["category"].fillna("")
    cat["year"] = cat["year"].astype("Int64")
    cat["price"] = cat["price"].astype("float64")
    return cat.sort_values("item_id", ignore_index=True)


def _user_snapshot(events: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """User features from ``events`` (already cut at ``at``) as seen at time ``at``."""
    g = events.groupby("user_id", sort=True)
    first, last = g["timestamp"].min(), g["timestamp"].max()
    day = pd.Timedelta(days=1)
    out = pd.DataFrame(
        {
            "n_interactions": g.size().astype("int64"),
            "n_items": g["item_id"].nunique().astype("int64"),
            "n_ratings": g["rating"].count().astype("int64"),
            "n_purchases": g["is_purchase"].sum().astype("int64"),
            "mean_rating": g["rating"].mean().astype("float64"),
            "recency_days": (at - last) / day,
            "active_days": (last - first) / day,
        }
    )
    counts = (
        events.loc[events["category"] != ""].groupby(["user_id", "category"]).size().rename("n").reset_index()
    )
    # Most frequent category; ties go to the alphabetically first so the result is deterministic.
    top = counts.sort_values(["user_id", "n", "category"], ascending=[True, False, True]).drop_duplicates(
        "user_id"
    )
    out["favourite_category"] = top.set_index("user_id")["category"].reindex(out.index).fillna("")
    return out.reset_index()


def _item_snapshot(events: pd.DataFrame) -> pd.DataFrame:
    """Cumulative item statistics from ``events`` (already cut at the snapshot time)."""
    g = events.groupby("item_id", sort=True)
    return pd.DataFrame(
        {
            "popularity": g.size().astype("int64"),
            "n_users": g["user_id"].nunique().astype("int64"),
            "mean_rating": g["rating"].mean().astype("float64"),
        }
    ).reset_index()


def user_profile_frame(
    train: pd.DataFrame, catalogue: pd.DataFrame, times: list[pd.Timestamp]
) -> pd.DataFrame:
    """Offline source of ``user_profile``: every user with events up to ``t``, for each snapshot time ``t``."""
    events = _prepare_events(train, catalogue)
    frames = []
    for at in times:
        snap = _user_snapshot(events.iloc[: events["timestamp"].searchsorted(at, side="right")], at)
        snap[TIMESTAMP_FIELD] = at
        frames.append(snap)
    return pd.concat(frames, ignore_index=True)[["user_id", TIMESTAMP_FIELD, *USER_FEATURES]]


def item_stats_frame(train: pd.DataFrame, catalogue: pd.DataFrame, times: list[pd.Timestamp]) -> pd.DataFrame:
    """Offline source of ``item_stats``: the whole catalogue at the first snapshot, then only items whose
    statistics changed (unchanged rows would add nothing to a latest-row-at-or-before join)."""
    events = _prepare_events(train, catalogue)
    frames, previous = [], None
    for at in times:
        stats = _item_snapshot(events.iloc[: events["timestamp"].searchsorted(at, side="right")])
        snap = catalogue.merge(stats, on="item_id", how="left")  # keeps catalogue order
        snap["popularity"] = snap["popularity"].fillna(0).astype("int64")
        snap["n_users"] = snap["n_users"].fillna(0).astype("int64")
        popularity = snap["popularity"].to_numpy()
        if previous is not None:
            snap = snap[popularity != previous]
        previous = popularity
        snap[TIMESTAMP_FIELD] = at
        frames.append(snap)
    return pd.concat(frames, ignore_index=True)[["item_id", TIMESTAMP_FIELD, *ITEM_FEATURES]]


def _prepare_events(train: pd.DataFrame, catalogue: pd.DataFrame) -> pd.DataFrame:
    """Train events sorted by time, with the item's category and a purchase flag attached."""
    cols = ["user_id", "item_id", "rating", "timestamp", "event_type"]
    events = train[cols].merge(catalogue[["item_id", "category"]], on="item_id", how="left")
    events["category"] = events["category"].fillna("")
    events["is_purchase"] = events["event_type"].eq("purchase")
    return events.sort_values("timestamp", kind="stable", ignore_index=True)


# ---------------------------------------------------------------------------------------------- the stage


def _read_split(cfg: RunConfig, name: str) -> pd.DataFrame:
    path = cfg.paths.splits / f"{name}.parquet"
    if not path.exists():
        raise StageInputError(f"features: no {name} split at {path}; run the split stage first")
    frame = pd.read_parquet(path)
    if frame.empty:
        raise StageInputError(f"features: {name} split {path} is empty")
    frame["user_id"] = frame["user_id"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    if "rating" not in frame:
        frame["rating"] = np.nan
    if "event_type" not in frame:
        frame["event_type"] = "rating"
    return frame


def _read_items(cfg: RunConfig) -> pd.DataFrame | None:
    items_path = cfg.paths.validated / "items.parquet"
    if not items_path.exists():
        log.warning("features: no item table at %s; item attributes left empty", items_path)
        return None
    return pd.read_parquet(items_path)


def _write_snapshots(
    events: pd.DataFrame, catalogue: pd.DataFrame, folder: Path
) -> tuple[pd.DataFrame, pd.DataFrame, list[pd.Timestamp]]:
    """Cumulative user/item snapshots of ``events`` written as the offline sources in ``folder``."""
    times = snapshot_times(events["timestamp"])
    users = user_profile_frame(events, catalogue, times)
    item_rows = item_stats_frame(events, catalogue, times)
    folder.mkdir(parents=True, exist_ok=True)
    users.to_parquet(folder / USER_PROFILE_FILE, index=False)
    item_rows.to_parquet(folder / ITEM_STATS_FILE, index=False)
    return users, item_rows, times


def build_features(cfg: RunConfig) -> FeaturesResult:
    """Compute user/item snapshots from the training split (and, for tuning, from the fit split alone), apply
    the Feast definitions and materialize the latest training snapshot into the online store. Returns (and
    saves to reports/features.json) a summary."""
    started = time.perf_counter()
    train, items = _read_split(cfg, "train"), _read_items(cfg)
    catalogue = item_catalogue(items, train)
    out = cfg.paths.features
    users, item_rows, times = _write_snapshots(train, catalogue, out)
    # Tuning fits on `fit` and scores on `valid`: its features must not count the validation events.
    _write_snapshots(_read_split(cfg, "fit"), catalogue, out / TUNING_DIR)
    computed = time.perf_counter()
    log.info(
        "features: %d snapshots, %d user rows, %d item rows computed in %.1fs",
        len(times), len(users), len(item_rows), computed - started,
    )  # fmt: skip

    store = feature_store(cfg)
    if (out / "registry.db").exists():
        # A rebuild replaces what the online store holds: Redis would keep rows newer than the new snapshots.
        store.teardown()
        store = feature_store(cfg)
    store.apply(feature_objects(out).objects())
    # Materialize every snapshot; the online store keeps the latest row per entity.
    until = times[-1] + pd.Timedelta(seconds=1)
    store.materialize(
        start_date=(times[0] - pd.Timedelta(seconds=1)).to_pydatetime(),
        end_date=until.to_pydatetime(),
        feature_views=["user_profile", "item_stats"],
    )
    seconds = time.perf_counter() - started
    log.info(
        "features: applied and materialized into %s in %.1fs",
        cfg.online_store,
        seconds - (computed - started),
    )

    result = FeaturesResult(
        user_rows=int(users["user_id"].nunique()),
        item_rows=int(item_rows["item_id"].nunique()),
        user_features=USER_FEATURES,
        item_features=ITEM_FEATURES,
        online_store=cfg.online_store,
        registry=str(out / "registry.db"),
        materialized_until=until.isoformat(),
        project=feast_project(cfg),
        snapshots=len(times),
        seconds=round(seconds, 3),
    )
    result.save(cfg.paths.reports, "features")
    return result


# ---------------------------------------------------------------------------------------------- reading


def _historical(
    store: feast.FeatureStore, key: str, view: str, names: list[str], ids: Sequence[str], as_of: pd.Timestamp
) -> pd.DataFrame:
    """Point-in-time features of ``ids`` at ``as_of`` (one row per distinct id, indexed by id, NaN if none)."""
    unique = sorted(set(map(str, ids)))
    entity_df = pd.DataFrame({key: unique, TIMESTAMP_FIELD: as_of})
    refs = [f"{view}:{n}" for n in names]
    df = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    return df.drop_duplicates(key).set_index(key)[names]


def _hashed_one_hot(values: pd.Series) -> np.ndarray:
    """Stable (crc32) hashed one-hot of strings into CATEGORY_BUCKETS columns; '' / missing -> all zeros."""
    out = np.zeros((len(values), CATEGORY_BUCKETS), dtype=np.float32)
    for row, value in enumerate(values.fillna("").astype(str)):
        if value:
            out[row, zlib.crc32(value.encode()) % CATEGORY_BUCKETS] = 1.0
    return out


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Fixed (data-independent) scaling, so a row does not depend on which other ids were requested."""
    x = pd.to_numeric(frame[column], errors="coerce").astype("float64").to_numpy()
    if column == "mean_rating":
        x = x / RATING_RANGE[1]
    elif column == "year":
        x = (x - 2000.0) / 25.0
    else:  # counts, day spans, prices: heavy-tailed and non-negative
        x = np.log1p(np.clip(x, 0.0, None))
    return np.nan_to_num(x, nan=0.0)


def _encode(frame: pd.DataFrame, numeric: list[str], category: str) -> np.ndarray:
    columns = [_numeric(frame, c)[:, None] for c in numeric]
    return np.hstack([*columns, _hashed_one_hot(frame[category])]).astype(np.float32)


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
    ``ITEM_MATRIX_COLUMNS`` (log1p counts/days, scaled rating/year, hashed one-hot category); ids without a
    snapshot at or before ``as_of`` get zero rows."""
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    store = store or feature_store(cfg)
    ids = {"user": [str(u) for u in user_ids], "item": [str(i) for i in item_ids]}
    suffix = TUNING_SUFFIX if tuning else ""
    specs = {
        "user": ("user_id", f"user_profile{suffix}", USER_FEATURES, _USER_NUMERIC, "favourite_category"),
        "item": ("item_id", f"item_stats{suffix}", ITEM_FEATURES, _ITEM_NUMERIC, "category"),
    }
    matrices = []
    for kind, (key, view, names, numeric, category) in specs.items():
        width = len(numeric) + CATEGORY_BUCKETS
        if not ids[kind]:
            matrices.append(np.zeros((0, width), dtype=np.float32))
            continue
        frame = _historical(store, key, view, names, ids[kind], as_of).reindex(ids[kind])
        matrices.append(_encode(frame, numeric, category))
    return matrices[0], matrices[1]


def online_user_features(
    cfg: RunConfig, user_ids: Sequence[str], store: feast.FeatureStore | None = None
) -> dict[str, dict[str, Any]]:
    """Latest materialized ``user_profile`` features per user id (every feature None for unknown users)."""
    ids = [str(u) for u in user_ids]
    if not ids:
        return {}
    store = store or feature_store(cfg)
    refs = [f"user_profile:{n}" for n in USER_FEATURES]
    response = store.get_online_features(features=refs, entity_rows=[{"user_id": u} for u in ids]).to_dict()
    return {u: {n: response[n][row] for n in USER_FEATURES} for row, u in enumerate(response["user_id"])}
