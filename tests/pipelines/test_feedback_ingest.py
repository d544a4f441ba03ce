"""Feedback events from the API flow into the next ingest: click/cart/purchase appended to the interactions
with their stored user ids, impressions and dismissals left out, unknown items quarantined."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from fusionrec.config import RunConfig
from pipelines.ingest import IngestError, ingest
from pipelines.privacy import pseudonymise_one, stored_user_id
from pipelines.schema import INTERACTION_COLUMNS
from pipelines.validate import validate
from serving.events import FeedbackEvent, open_event_store
from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, reachable

NOW = datetime.now(UTC).replace(microsecond=0)


def _shop(folder: Path) -> dict[str, str]:
    """A tiny shop: three users, items i1..i4, six purchases in 2024."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [("u1", "i1"), ("u1", "i2"), ("u2", "i2"), ("u2", "i3"), ("u3", "i1"), ("u3", "i4")]
    lines = ["user_id,item_id,timestamp,event_type,price"]
    lines += [f"{u},{i},2024-03-0{n + 1}T10:00:00Z,purchase,9.5" for n, (u, i) in enumerate(rows)]
    (folder / "events.csv").write_text("\n".join(lines) + "\n")
    (folder / "items.csv").write_text("item_id,title\ni1,A\ni2,B\ni3,C\ni4,D\n")
    return {"dataset": None, "interactions": str(folder / "events.csv"), "items": str(folder / "items.csv")}


def _events(pseudonymise: bool = True) -> list[FeedbackEvent]:
    """What the API would have stored for raw users u1 and new-user: ids already stored ids."""
    u1, new = stored_user_id("u1", pseudonymise), stored_user_id("new-user", pseudonymise)
    at = [NOW - timedelta(minutes=m) for m in range(10, 0, -1)]
    return [
        FeedbackEvent("impression", u1, "i3", at[0], arm="champion", position=1),
        FeedbackEvent("click", u1, "i3", at[1], arm="champion", position=1),
        FeedbackEvent("cart", u1, "i3", at[2], quantity=2),
        FeedbackEvent("purchase", u1, "i3", at[3], order_value=30.0, quantity=2),
        FeedbackEvent("dismiss", new, "i1", at[4]),
        FeedbackEvent("click", new, "i4", at[5]),
        FeedbackEvent("purchase", new, "i4", at[6], order_value=12.5),  # no quantity: one unit
        FeedbackEvent("click", new, "no-such-item", at[7]),
    ]


def _store_events(cfg: RunConfig, events: list[FeedbackEvent]) -> None:
    store = open_event_store(cfg)
    try:
        assert store.add(events) == len(events)
    finally:
        store.close()


def _canonical(cfg: RunConfig) -> pd.DataFrame:
    return pd.read_parquet(cfg.paths.canonical / "interactions.parquet")


def _feedback_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["source_file"].str.startswith("feedback:")].reset_index(drop=True)


def test_feedback_events_are_appended_with_stored_ids(home: Path, tmp_path: Path) -> None:
    cfg = RunConfig.from_env(home=home, source=_shop(tmp_path / "shop"))
    _store_events(cfg, _events())
    result = ingest(cfg)

    assert (result.feedback_rows, result.feedback_rejected) == (5, 1)
    assert result.feedback_source == f"feedback:{cfg.paths.events_db}"
    assert result.rows["interactions"] == 6 + 5 and result.rows_read["interactions"] == 6 + 6
    inter = _canonical(cfg)
    assert tuple(inter.columns) == INTERACTION_COLUMNS
    fed = _feedback_rows(inter)
    u1, new = pseudonymise_one("u1"), pseudonymise_one("new-user")
    # impressions and dismissals are not interactions; the ids are the stored ones, not hashed again
    assert list(fed["event_type"]) == ["click", "cart", "purchase", "click", "purchase"]
    assert list(fed["user_id"]) == [u1, u1, u1, new, new]
    assert list(fed["item_id"]) == ["i3", "i3", "i3", "i4", "i4"]
    # the same shopper in the source file and in the feedback is one user
    assert set(inter.loc[inter["source_file"].str.endswith("events.csv"), "user_id"]) >= {u1}
    assert fed["price"].tolist()[2] == 15.0 and fed["price"].tolist()[4] == 12.5  # order value per unit
    assert fed["price"].isna().tolist() == [True, True, False, True, False]
    assert fed["quantity"].tolist()[1:3] == [2.0, 2.0] and pd.isna(fed["quantity"].iloc[4])
    assert list(fed["source_row"]) == [2, 3, 4, 6, 7]  # position in the store, oldest first
    assert (fed["source_file"] == f"feedback:{cfg.paths.events_db}").all()
    assert str(inter["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert fed["timestamp"].iloc[0] == pd.Timestamp(NOW - timedelta(minutes=9))


def test_unknown_item_is_quarantined_and_the_batch_validates(home: Path, tmp_path: Path) -> None:
    cfg = RunConfig.from_env(home=home, source=_shop(tmp_path / "shop"), max_reject_share=0.2)
    _store_events(cfg, _events())
    ingest(cfg)
    rejected = pd.read_parquet(cfg.paths.canonical / "rejected" / "interactions.parquet")
    assert list(rejected["reason"]) == ["unknown item_id"]
    assert rejected["source_file"].iloc[0] == f"feedback:{cfg.paths.events_db}"
    assert rejected["source_row"].iloc[0] == 8
    assert "'no-such-item' not in the items table" in rejected["detail"].iloc[0]
    assert "no-such-item" in rejected["original"].iloc[0] and "event_id" in rejected["original"].iloc[0]

    checked = validate(cfg)
    assert checked.success
    assert checked.accepted["interactions"] == 11 and checked.rejected["interactions"] == 1
    quarantine = pd.read_parquet(cfg.paths.quarantine / "interactions.parquet")
    assert list(quarantine["reason"]) == ["unknown item_id"] and list(quarantine["stage"]) == ["ingest"]
    validated = pd.read_parquet(cfg.paths.validated / "interactions.parquet")
    assert len(_feedback_rows(validated)) == 5


def test_without_items_table_the_catalogue_is_the_source_interactions(home: Path, tmp_path: Path) -> None:
    source = _shop(tmp_path / "shop")
    del source["items"]
    cfg = RunConfig.from_env(home=home, source=source)
    _store_events(cfg, _events())
    result = ingest(cfg)
    assert (result.feedback_rows, result.feedback_rejected) == (5, 1)
    rejected = pd.read_parquet(cfg.paths.canonical / "rejected" / "interactions.parquet")
    assert "not in the source's interactions (no items table)" in rejected["detail"].iloc[0]


def test_raw_ids_stay_raw_when_pseudonymisation_is_off(home: Path, tmp_path: Path) -> None:
    cfg = RunConfig.from_env(home=home, source=_shop(tmp_path / "shop"), pseudonymise=False)
    _store_events(cfg, _events(pseudonymise=False))
    ingest(cfg)
    inter = _canonical(cfg)
    assert set(_feedback_rows(inter)["user_id"]) == {"u1", "new-user"}
    assert set(inter["user_id"]) == {"u1", "u2", "u3", "new-user"}


def test_no_event_store_or_feedback_off_appends_nothing(home: Path, tmp_path: Path) -> None:
    cfg = RunConfig.from_env(home=home, source=_shop(tmp_path / "shop"))
    result = ingest(cfg)
    assert (result.feedback_rows, result.feedback_source) == (0, None)
    assert not cfg.paths.events_db.exists()  # ingest does not create the store

    _store_events(cfg, _events())
    off = ingest(RunConfig.from_env(home=home, source=cfg.source, use_feedback=False))
    assert (off.feedback_rows, off.feedback_source, off.rows["interactions"]) == (0, None, 6)
    assert _feedback_rows(_canonical(cfg)).empty


def test_only_impressions_append_nothing(home: Path, tmp_path: Path) -> None:
    cfg = RunConfig.from_env(home=home, source=_shop(tmp_path / "shop"))
    _store_events(cfg, [e for e in _events() if e.event_type in ("impression", "dismiss")])
    result = ingest(cfg)
    assert (result.feedback_rows, result.feedback_rejected, result.rows["interactions"]) == (0, 0, 6)
    assert result.feedback_source == f"feedback:{cfg.paths.events_db}"


def test_feedback_from_postgresql(home: Path, tmp_path: Path) -> None:
    if not reachable(POSTGRES_HOST, POSTGRES_PORT):
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}")
    import psycopg2

    database = f"fr_events_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname="test")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database}")
    try:
        url = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{database}"
        cfg = RunConfig.from_env(home=home, source=_shop(tmp_path / "shop"), events_url=url)
        _store_events(cfg, _events())
        result = ingest(cfg)
        assert (result.feedback_rows, result.feedback_rejected) == (5, 1)
        assert result.feedback_source == f"feedback:postgresql://{POSTGRES_HOST}:{POSTGRES_PORT}/{database}"
        assert not cfg.paths.events_db.exists()
        assert list(_feedback_rows(_canonical(cfg))["event_type"]) == [
            "click",
            "cart",
            "purchase",
            "click",
            "purchase",
        ]
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()


def test_an_unreachable_events_database_fails_the_ingest_in_one_line(home: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://postgres:secret@127.0.0.1:{port}/events"
    cfg = RunConfig.from_env(home=home, source=_shop(tmp_path / "shop"), events_url=url)
    with pytest.raises(IngestError, match=f"127.0.0.1:{port}/events is unreachable") as raised:
        ingest(cfg)
    assert "secret" not in str(raised.value)
    assert not (cfg.paths.canonical / "interactions.parquet").exists()  # nothing half-written
