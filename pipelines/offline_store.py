"""Feast's offline store as configured by ``RunConfig.offline_store``: the snapshot Parquet files themselves
(``file``, one machine), those files read through Spark (``spark``: ``local[*]`` by default, a cluster with
``FUSIONREC_SPARK_MASTER``) or PostgreSQL tables loaded from them (``postgres``: a SQL store shared by every
worker). The feature computation is the same for all three; only where Feast reads and joins differs."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from feature_repo.definitions import (
    ITEM_STATS_FILE,
    TIMESTAMP_FIELD,
    TUNING_DIR,
    TUNING_SUFFIX,
    USER_PROFILE_FILE,
    offline_table,
)
from fusionrec.config import RunConfig
from models.spark_als import spark_settings
from pipelines.stage import StageInputError

log = logging.getLogger(__name__)

OFFLINE_KINDS = ("file", "postgres", "spark")
_PG_TYPES = {"string": "TEXT", "large_string": "TEXT", "int64": "BIGINT", "double": "DOUBLE PRECISION"}


def _postgres_url(cfg: RunConfig) -> str:
    if not cfg.offline_store_url:
        raise StageInputError(
            "offline_store=postgres needs a PostgreSQL URL: set FUSIONREC_OFFLINE_STORE_URL "
            "(or FUSIONREC_PROFILE=production with FUSIONREC_POSTGRES_URL)"
        )
    return cfg.offline_store_url


def postgres_settings(url: str) -> dict[str, Any]:
    """``postgresql://user[:password]@host[:port]/database`` -> Feast's PostgreSQL connection fields."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/")
    if not parts.hostname or not database:
        raise StageInputError(f"offline store URL {url!r}: expected postgresql://user@host:port/database")
    return {
        "host": parts.hostname,
        "port": parts.port or 5432,
        "database": database,
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
        "sslmode": os.environ.get("FUSIONREC_POSTGRES_SSLMODE", "prefer"),
    }


def spark_conf() -> dict[str, str]:
    """The Spark session Feast starts: local on this machine unless ``FUSIONREC_SPARK_MASTER`` names a cluster."""
    return spark_settings() | {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": os.environ.get("FUSIONREC_SPARK_PARTITIONS", "8"),
    }


def offline_store_config(cfg: RunConfig) -> dict[str, Any]:
    """The ``offline_store`` block of Feast's RepoConfig for ``cfg``."""
    if cfg.offline_store == "postgres":
        return {"type": "postgres", **postgres_settings(_postgres_url(cfg))}
    if cfg.offline_store == "spark":
        return {"type": "spark", "spark_conf": spark_conf()}
    if cfg.offline_store == "file":
        return {"type": "file"}
    raise StageInputError(
        f"unknown offline store {cfg.offline_store!r}; choose one of {', '.join(OFFLINE_KINDS)}"
    )


def snapshot_files(features_dir: Path) -> dict[str, Path]:
    """Feature view name -> the Parquet file of its snapshots."""
    tuning = features_dir / TUNING_DIR
    return {
        "user_profile": features_dir / USER_PROFILE_FILE,
        "item_stats": features_dir / ITEM_STATS_FILE,
        f"user_profile{TUNING_SUFFIX}": tuning / USER_PROFILE_FILE,
        f"item_stats{TUNING_SUFFIX}": tuning / ITEM_STATS_FILE,
    }


def _column_type(field: pa.Field) -> str:
    if pa.types.is_timestamp(field.type):
        return "TIMESTAMPTZ"
    try:
        return _PG_TYPES[str(field.type)]
    except KeyError as error:
        raise StageInputError(
            f"offline store: column {field.name} has unsupported type {field.type}"
        ) from error


def _csv(table: pa.Table) -> bytes:
    """CSV for COPY: timestamps at microseconds (PostgreSQL's precision), null as an empty unquoted field,
    every string quoted so that an empty string stays an empty string."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            column = column.cast(pa.timestamp("us", tz="UTC"))
        columns.append(column)
    buffer = io.BytesIO()
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    pacsv.write_csv(pa.table(columns, names=table.column_names), buffer, options)
    return buffer.getvalue()


def load_postgres_tables(cfg: RunConfig, table_prefix: str) -> dict[str, int]:
    """Replace the project's offline tables with the snapshot files' rows (one transaction, so a reader sees
    the old tables or the new ones); returns rows per table."""
    import psycopg

    rows: dict[str, int] = {}
    with psycopg.connect(_postgres_url(cfg)) as conn, conn.cursor() as cur:
        for view, path in snapshot_files(cfg.paths.features).items():
            file = pq.ParquetFile(path)
            schema = file.schema_arrow
            table = offline_table(table_prefix, view)
            key = schema.names[0]  # user_id / item_id
            columns = ", ".join(f'"{f.name}" {_column_type(f)}' for f in schema)
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
            cur.execute(f'CREATE TABLE "{table}" ({columns})')
            names = ", ".join(f'"{n}"' for n in schema.names)
            with cur.copy(f'COPY "{table}" ({names}) FROM STDIN WITH (FORMAT csv)') as copy:
                for batch in file.iter_batches(batch_size=200_000):
                    copy.write(_csv(pa.Table.from_batches([batch])))
            cur.execute(f'CREATE INDEX ON "{table}" ("{key}", "{TIMESTAMP_FIELD}")')
            rows[table] = file.metadata.num_rows
    log.info("offline store: %d PostgreSQL tables loaded (%s rows)", len(rows), f"{sum(rows.values()):,}")
    return rows


def drop_postgres_tables(cfg: RunConfig, table_prefix: str) -> None:
    """Remove the project's offline tables (a home's teardown)."""
    import psycopg

    with psycopg.connect(_postgres_url(cfg)) as conn, conn.cursor() as cur:
        for view in snapshot_files(cfg.paths.features):
            cur.execute(f'DROP TABLE IF EXISTS "{offline_table(table_prefix, view)}"')
