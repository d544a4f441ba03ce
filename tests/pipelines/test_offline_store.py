"""Feast's offline store in PostgreSQL and Spark: the same snapshots, the same point-in-time answers as the
Parquet file store (the reference the other feature tests check by hand)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import RunConfig
from pipelines import features as F
from pipelines import offline_store as O
from pipelines.stage import StageInputError
from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, reachable
from tests.pipelines.test_features import tiny_items, tiny_train, write_inputs


def probe_rows() -> pd.DataFrame:
    """Rows before any snapshot, between snapshots, exactly at one, after the last, and unknown ids."""
    times = ["2024-01-01", "2024-01-22", "2024-02-12", "2024-03-15", "2024-06-01", "2024-02-20"]
    users = ["u1", "u1", "u2", "u1", "u2", "nobody"]
    items = ["i1", "i2", "i1", "i3", "i4", "i5"]
    return pd.DataFrame(
        {"user_id": users, "item_id": items, "event_timestamp": pd.to_datetime(times, utc=True)}
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[pd.DataFrame, tuple[np.ndarray, np.ndarray]]:
    cfg = write_inputs(tmp_path_factory.mktemp("file"), tiny_train(), tiny_items())
    F.build_features(cfg)
    return answers(cfg)


def answers(cfg: RunConfig) -> tuple[pd.DataFrame, tuple[np.ndarray, np.ndarray]]:
    store = F.feature_store(cfg)
    rows = F.point_in_time_features(cfg, probe_rows(), store=store)
    matrices = F.training_features(
        cfg, ["u1", "u2", "nobody"], ["i1", "i4"], pd.Timestamp("2024-02-20", tz="UTC"), store=store
    )
    return rows, matrices


def nulls_as_none(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), None)


def assert_same_answers(cfg: RunConfig, reference) -> None:
    rows, matrices = answers(cfg)
    pd.testing.assert_frame_equal(nulls_as_none(rows), nulls_as_none(reference[0]), check_dtype=False)
    for got, want in zip(matrices, reference[1], strict=True):
        np.testing.assert_allclose(got, want)
    assert F.online_user_features(cfg, ["u1"])["u1"]["n_interactions"] == 3
    assert F.online_item_features(cfg, ["i4"])["i4"]["n_purchases"] == 1


@pytest.fixture
def features_db() -> Iterator[str]:
    """A throwaway PostgreSQL database for one test's offline tables."""
    if not reachable(POSTGRES_HOST, POSTGRES_PORT):
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}")
    from tests.integration.services import throwaway_databases

    with throwaway_databases("features") as databases:
        yield databases["features"]


# ---------------------------------------------------------------------------------------------- settings


def test_postgres_settings_from_url():
    settings = O.postgres_settings("postgresql://feast:s%40cret@db.internal:6543/fusionrec_features")
    assert settings["host"] == "db.internal" and settings["port"] == 6543
    assert settings["user"] == "feast" and settings["password"] == "s@cret"
    assert settings["database"] == "fusionrec_features"
    with pytest.raises(StageInputError, match="expected postgresql://user@host:port/database"):
        O.postgres_settings("postgresql://db.internal:5432")


def test_offline_store_config_per_kind(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FUSIONREC_SPARK_MASTER", "spark://spark-master:7077")
    base = RunConfig.from_env(home=tmp_path)
    assert O.offline_store_config(base) == {"type": "file"}
    spark = O.offline_store_config(RunConfig.from_env(home=tmp_path, offline_store="spark"))
    assert spark["type"] == "spark" and spark["spark_conf"]["spark.master"] == "spark://spark-master:7077"
    with pytest.raises(StageInputError, match="needs a PostgreSQL URL"):
        O.offline_store_config(RunConfig.from_env(home=tmp_path, offline_store="postgres"))
    with pytest.raises(StageInputError, match="unknown offline store 'bigquery'"):
        O.offline_store_config(RunConfig.from_env(home=tmp_path, offline_store="bigquery"))


def test_csv_for_copy_keeps_empty_strings_apart_from_nulls():
    import pyarrow as pa

    table = pa.table({"s": ["", None, 'a "b"'], "x": [1.5, None, 2.0]})
    assert O._csv(table).decode().splitlines() == ['"","1.5"', ",", '"a ""b""","2"']


# ---------------------------------------------------------------------------------------------- the stores


@pytest.mark.services
def test_postgres_offline_store_answers_like_the_file_store(tmp_path: Path, features_db: str, reference):
    cfg = write_inputs(
        tmp_path, tiny_train(), tiny_items(), offline_store="postgres", offline_store_url=features_db
    )
    result = F.build_features(cfg)
    assert result.offline_store == "postgres" and result.project.startswith("fusionrec_")
    import psycopg

    with psycopg.connect(features_db) as conn:
        tables = {row[0]: row[1] for row in conn.execute(
            "SELECT relname, n_live_tup FROM pg_stat_user_tables WHERE relname LIKE %s",
            (f"{result.project}__%",),
        )}  # fmt: skip
        snapshots = conn.execute(f'SELECT count(*) FROM "{result.project}__user_profile"').fetchone()[0]
    assert len(tables) == 4  # user/item views of the training and the tuning phase
    assert snapshots == len(pd.read_parquet(cfg.paths.features / "user_profile.parquet"))
    assert_same_answers(cfg, reference)
    F.build_features(cfg)  # a rebuild replaces the tables rather than appending
    with psycopg.connect(features_db) as conn:
        again = conn.execute(f'SELECT count(*) FROM "{result.project}__user_profile"').fetchone()[0]
    assert again == snapshots
    O.drop_postgres_tables(cfg, F.offline_table_prefix(cfg))


@pytest.mark.slow
def test_spark_offline_store_answers_like_the_file_store(tmp_path: Path, reference):
    cfg = write_inputs(tmp_path, tiny_train(), tiny_items(), offline_store="spark")
    result = F.build_features(cfg)
    assert result.offline_store == "spark"
    assert_same_answers(cfg, reference)
