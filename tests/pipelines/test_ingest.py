"""Ingest: bundled datasets into the canonical schema, files with column mapping, clear errors on bad input."""

from pathlib import Path

import pandas as pd
import pytest

from fusionrec.config import RunConfig
from pipelines.ingest import IngestError, ingest
from pipelines.privacy import pseudonymise_one
from pipelines.schema import INTERACTION_COLUMNS


def _cfg(home: Path, **source: str) -> RunConfig:
    return RunConfig.from_env(home=home, source=source)


def _read(home: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(home / "data" / "canonical" / f"{table}.parquet")


def test_movielens(home: Path) -> None:
    result = ingest(_cfg(home, dataset="ml-100k"))
    assert result.rows == {"interactions": 100_000, "items": 1682, "users": 943}
    inter = _read(home, "interactions")
    assert tuple(inter.columns) == INTERACTION_COLUMNS
    assert inter["rating"].between(1, 5).all() and (inter["event_type"] == "rating").all()
    assert str(inter["timestamp"].dtype) == "datetime64[ns, UTC]"
    items = _read(home, "items").set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story" and items.loc["1", "year"] == 1995
    assert items.loc["1", "genres"] == "Animation|Children's|Comedy"


def test_instacart_time_is_consistent_with_order_sequence(home: Path) -> None:
    ingest(_cfg(home, dataset="instacart"))
    inter = _read(home, "interactions")
    assert len(inter) == 150_000 and (inter["event_type"] == "purchase").all()
    raw = pd.read_csv(
        Path(__import__("pipelines.datasets").datasets.dataset_dir("instacart")) / "df_sample.csv"
    )
    orders = inter.groupby("session_id")["timestamp"].min()
    seq = raw.drop_duplicates("order_id").set_index("order_id")
    seq.index = seq.index.astype(str)
    seq = seq.loc[orders.index].assign(t=orders).sort_values(["user_id", "order_number"])
    # a later order of a user never happens before an earlier one
    assert (seq.groupby("user_id")["t"].diff().dropna() >= pd.Timedelta(0)).all()


def test_file_with_column_mapping(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "customer,product,stars,when,kind\nu1,p1,4,2021-03-01T10:00:00Z,rating\nu2,p1,5,1614600000,Rating\n"
    )
    ingest(
        _cfg(
            home,
            interactions=str(path),
            user_col="customer",
            item_col="product",
            rating_col="stars",
            timestamp_col="when",
            event_col="kind",
            dataset=None,
        )
    )
    inter = _read(home, "interactions")
    assert list(inter["user_id"]) == [pseudonymise_one("u1"), pseudonymise_one("u2")] and list(
        inter["event_type"]
    ) == ["rating", "rating"]
    assert inter["timestamp"].iloc[1] == pd.Timestamp(1614600000, unit="s", tz="UTC")


def test_parquet_items_and_users(home: Path, tmp_path: Path) -> None:
    pd.DataFrame(
        {"user_id": [1, 2], "item_id": [10, 11], "timestamp": [1_600_000_000, 1_600_000_100]}
    ).to_parquet(tmp_path / "i.parquet")
    pd.DataFrame({"item_id": [10, 11], "category": ["a", "b"], "price": [1.5, 2.0]}).to_parquet(
        tmp_path / "it.parquet"
    )
    ingest(
        _cfg(home, interactions=str(tmp_path / "i.parquet"), items=str(tmp_path / "it.parquet"), dataset=None)
    )
    assert list(_read(home, "interactions")["item_id"]) == ["10", "11"]
    assert list(_read(home, "items")["category"]) == ["a", "b"]
    assert (_read(home, "interactions")["event_type"] == "click").all()  # no rating, no event column


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user_id,rating,timestamp\nu1,4,1600000000\n", r"missing required column 'item_id'.*--item-col"),
        ("", "file is empty"),
        ("user_id,item_id,timestamp\n", "file is empty"),
    ],
)
def test_bad_files_fail_with_one_clear_line(home: Path, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(IngestError, match=message) as info:
        ingest(_cfg(home, interactions=str(path), dataset=None))
    assert "\n" not in str(info.value) and "bad.csv" in str(info.value)


def test_values_that_do_not_parse_are_rejected_at_ingestion_not_fatal(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,rating,timestamp\nu1,i1,4,1600000000\nu2,i2,abc,1600000000\n")
    result = ingest(_cfg(home, interactions=str(path), dataset=None))
    assert result.rows_read == {"interactions": 2} and result.rows == {"interactions": 1}
    assert result.reasons == {"rating not a number": 1}
    rejected = pd.read_parquet(home / "data" / "canonical" / "rejected" / "interactions.parquet")
    assert rejected[["source_row", "reason", "detail"]].values.tolist() == [
        [2, "rating not a number", "rating: 'abc'"]
    ]


def test_without_pseudonymisation_ids_are_kept(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp\nu1,i1,1600000000\n")
    cfg = RunConfig.from_env(
        home=home, source={"interactions": str(path), "dataset": None}, pseudonymise=False
    )
    ingest(cfg)
    assert list(_read(home, "interactions")["user_id"]) == ["u1"]
