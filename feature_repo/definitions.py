"""FusionRec's Feast objects: entities, offline sources, feature views and feature services.

Declarative only: the features themselves are computed by ``pipelines/features.py``, which writes the Parquet
snapshots read here and calls ``feature_objects(cfg.paths.features)``. The module-level names at the bottom are
what ``feast apply`` finds when a human runs the CLI in this folder (see ``feature_store.yaml``); their source
paths follow ``FUSIONREC_FEATURES_DIR`` or ``$FUSIONREC_HOME/features``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_source import DataSource
from feast.types import Float64, Int64, String

# Where the snapshots are read from: the Parquet files themselves (Feast's file store), the same files through
# Spark (Feast's Spark offline store), or PostgreSQL tables loaded from them (Feast's PostgreSQL offline store).
OfflineKind = Literal["file", "postgres", "spark"]

USER_PROFILE_FILE = "user_profile.parquet"
ITEM_STATS_FILE = "item_stats.parquet"
TIMESTAMP_FIELD = "event_timestamp"
TUNING_DIR = "tuning"  # snapshots of the fit split, under the features folder
TUNING_SUFFIX = "_tuning"  # feature view name suffix of the tuning phase

# ttl 0 = a snapshot stays valid until the next one; point-in-time joins pick the latest snapshot <= as_of.
# Every user with events is in every snapshot (recency moves with time); an item row is written only when its
# statistics changed, except in the first and the last snapshot, which hold the whole catalogue.
_NO_EXPIRY = timedelta(0)

USER_PROFILE_SCHEMA = [
    Field(name="n_interactions", dtype=Int64, description="events up to the snapshot (frequency)"),
    Field(name="n_items", dtype=Int64, description="distinct items interacted with"),
    Field(name="n_ratings", dtype=Int64, description="events carrying an explicit rating"),
    Field(name="n_purchases", dtype=Int64, description="purchase events"),
    Field(name="n_orders", dtype=Int64, description="distinct sessions with a purchase (orders)"),
    Field(
        name="monetary", dtype=Float64, description="sum of price x quantity over purchases (0 if unknown)"
    ),
    Field(name="mean_rating", dtype=Float64, description="mean explicit rating (null without ratings)"),
    Field(name="recency_days", dtype=Float64, description="days from the last event to the snapshot"),
    Field(name="active_days", dtype=Float64, description="days between first and last event"),
    Field(name="n_sessions", dtype=Int64, description="distinct sessions (events without one not counted)"),
    Field(name="events_per_session", dtype=Float64, description="mean events per session (null without)"),
    Field(name="session_minutes", dtype=Float64, description="mean session duration (null without sessions)"),
    Field(name="purchase_view_ratio", dtype=Float64, description="purchases per view or click (0 without)"),
    Field(name="favourite_category", dtype=String, description="most frequent item category ('' if none)"),
    Field(
        name="favourite_category_2", dtype=String, description="second most frequent category ('' if none)"
    ),
    Field(name="favourite_category_3", dtype=String, description="third most frequent category ('' if none)"),
]

ITEM_STATS_SCHEMA = [
    Field(name="popularity", dtype=Int64, description="events on the item up to the snapshot"),
    Field(name="popularity_7d", dtype=Int64, description="events in the 7 days up to the snapshot"),
    Field(name="popularity_30d", dtype=Int64, description="events in the 30 days up to the snapshot"),
    Field(name="n_users", dtype=Int64, description="distinct users who interacted"),
    Field(name="n_purchases", dtype=Int64, description="purchase events"),
    Field(name="conversion_rate", dtype=Float64, description="purchases per view or click (0 without views)"),
    Field(name="mean_rating", dtype=Float64, description="mean explicit rating (null without ratings)"),
    Field(
        name="category", dtype=String, description="category, first genre or top of the path ('' if unknown)"
    ),
    Field(name="brand", dtype=String, description="brand ('' if unknown)"),
    Field(name="year", dtype=Int64, description="release year (null if unknown)"),
    Field(
        name="price",
        dtype=Float64,
        description="catalogue price, else mean event price so far (null if none)",
    ),
]


@dataclass(frozen=True)
class FeatureRepo:
    """Every Feast object of the project, bound to one features folder."""

    user: Entity
    item: Entity
    user_profile_source: DataSource
    item_stats_source: DataSource
    user_profile: FeatureView
    item_stats: FeatureView
    two_tower_features: FeatureService
    user_online: FeatureService
    # The same views computed from the tuning (fit) split only, so validation events never reach the
    # features models are tuned with; offline only.
    tuning_views: tuple[FeatureView, ...] = ()

    def objects(self) -> list:
        """All objects, in the order ``FeatureStore.apply`` takes them."""
        return [
            self.user,
            self.item,
            self.user_profile_source,
            self.item_stats_source,
            self.user_profile,
            self.item_stats,
            *(view.batch_source for view in self.tuning_views),
            *self.tuning_views,
            self.two_tower_features,
            self.user_online,
        ]


def offline_table(table_prefix: str, view: str) -> str:
    """The PostgreSQL table holding a view's snapshots (one set of tables per Feast project)."""
    return f"{table_prefix}{view}"


def _source(kind: OfflineKind, name: str, path: Path, table: str, description: str) -> DataSource:
    common = {"name": f"{name}_source", "timestamp_field": TIMESTAMP_FIELD, "description": description}
    if kind == "postgres":
        from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
            PostgreSQLSource,
        )

        return PostgreSQLSource(table=table, **common)
    if kind == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(path=str(path), file_format="parquet", **common)
    return FileSource(path=str(path), **common)


def _snapshot_view(
    name: str,
    entity: Entity,
    schema: list[Field],
    path: Path,
    tuning: bool = False,
    kind: OfflineKind = "file",
    table_prefix: str = "",
) -> FeatureView:
    """A view over cumulative snapshots in one Parquet file (or the table loaded from it): of the training
    split (served online), or with ``tuning`` of the fit split only (offline, name suffixed ``_tuning``)."""
    name = f"{name}{TUNING_SUFFIX}" if tuning else name
    split = "fit split only (tuning)" if tuning else "training split"
    description = f"cumulative per-{entity.name} snapshots computed from the {split}"
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=_NO_EXPIRY,
        schema=schema,
        source=_source(kind, name, path, offline_table(table_prefix, name), description),
        online=not tuning,
        tags={"owner": "fusionrec", "stage": "features", "phase": "tuning" if tuning else "training"},
    )


def feature_objects(features_dir: Path, kind: OfflineKind = "file", table_prefix: str = "") -> FeatureRepo:
    """The project's Feast objects with offline sources read from ``features_dir`` (absolute paths), or with
    ``kind="postgres"`` from the tables ``<table_prefix><view>`` loaded from those files."""
    features_dir = Path(features_dir).resolve()
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="a shopper")
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="a product")
    where = {"kind": kind, "table_prefix": table_prefix}
    user_profile = _snapshot_view(
        "user_profile", user, USER_PROFILE_SCHEMA, features_dir / USER_PROFILE_FILE, **where
    )
    item_stats = _snapshot_view(
        "item_stats", item, ITEM_STATS_SCHEMA, features_dir / ITEM_STATS_FILE, **where
    )
    two_tower_features = FeatureService(
        name="two_tower_features",
        features=[user_profile, item_stats],
        description="side features of the two-tower model (historical retrieval for training)",
    )
    user_online = FeatureService(
        name="user_online",
        features=[user_profile],
        description="user features read online at serving time",
    )
    tuning = features_dir / TUNING_DIR
    tuning_views = (
        _snapshot_view(
            "user_profile", user, USER_PROFILE_SCHEMA, tuning / USER_PROFILE_FILE, tuning=True, **where
        ),
        _snapshot_view("item_stats", item, ITEM_STATS_SCHEMA, tuning / ITEM_STATS_FILE, tuning=True, **where),
    )
    return FeatureRepo(
        tuning_views=tuning_views,
        user=user,
        item=item,
        user_profile_source=user_profile.batch_source,
        item_stats_source=item_stats.batch_source,
        user_profile=user_profile,
        item_stats=item_stats,
        two_tower_features=two_tower_features,
        user_online=user_online,
    )


def default_features_dir() -> Path:
    """``FUSIONREC_FEATURES_DIR``, else ``$FUSIONREC_HOME/features`` (the CLI's view of the layout)."""
    if explicit := os.environ.get("FUSIONREC_FEATURES_DIR"):
        return Path(explicit).expanduser()
    return Path(os.environ.get("FUSIONREC_HOME", ".fusionrec")).expanduser() / "features"


# What `feast apply` registers when run in this folder.
_cli_repo = feature_objects(default_features_dir())
user = _cli_repo.user
item = _cli_repo.item
user_profile_source = _cli_repo.user_profile_source
item_stats_source = _cli_repo.item_stats_source
user_profile = _cli_repo.user_profile
item_stats = _cli_repo.item_stats
two_tower_features = _cli_repo.two_tower_features
user_online = _cli_repo.user_online
