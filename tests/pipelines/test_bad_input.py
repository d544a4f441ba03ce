"""The bad-input catalogue: every kind of bad input gets its documented outcome (docs/bad-input.md).

Row-level problems share one dirty shop (one ingest + validate run): each rejected row must land in the
quarantine with its source file, row number, original values and reason, and accepted + rejected must equal
the rows read. Whole-file problems each fail ingestion with one line naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from fusionrec.config import RunConfig
from pipelines.ingest import IngestError, ingest
from pipelines.privacy import pseudonym_key, pseudonymise_one
from pipelines.validate import DataValidationError, ValidationResult, validate

HEADER = "user_id,item_id,timestamp,event_type,session_id,price,quantity,rating,coupon"
GOOD = "u1,i1,2024-03-01T10:00:00Z,view,s1,9.99,1,,x"
# (line as written, expected reason or None for accepted); the data row number is the position + 1.
ROWS: list[tuple[bytes | str, str | None]] = [
    (GOOD, None),
    ("u1,i2,2024-03-01T10:05:00+02:00,click,s1,19.5,1,,", None),  # offset time zone -> UTC
    ("u2,i1,1709290000,cart,s2,9.99,2,,", None),  # unix seconds
    ("u2,i1,1709290000000,purchase,s2,9.99,2,,", None),  # unix milliseconds
    ("u3,i3,03/01/2024 11:00,view,,,,,", None),  # another date format, no price: optional
    ("u4,i1,2024-03-01T10:00:00Z,rating,,,,4,", None),
    ("u5,i1,2024-03-01T10:00:00Z,view,s5,abc,1,,", "price not a number"),
    ("u5,i1,not a time,view,s5,1.0,1,,", "timestamp not a timestamp"),
    (",i1,2024-03-01T10:00:00Z,view,s5,1.0,1,,", "null user_id"),
    ("u6,   ,2024-03-01T10:00:00Z,view,s6,1.0,1,,", "null item_id"),
    ("u6,i1,2024-03-01T10:00:00Z,teleport,s6,1.0,1,,", "unknown event_type"),
    ("u6,i1,2024-03-01T10:01:00Z,view,s6,-5,1,,", "negative price"),
    ("u6,i1,2024-03-01T10:02:00Z,view,s6,99999999,1,,", "absurd price"),
    ("u6,i1,2024-03-01T10:03:00Z,cart,s6,5,0,,", "quantity not positive"),
    ("u6,i1,2024-03-01T10:04:00Z,cart,s6,5,50000,,", "absurd quantity"),
    ("u7,i1,2024-03-01T10:00:00Z,rating,,,,11,", "rating out of range"),
    ("u7,i1,2100-01-01T00:00:00Z,view,,,,,", "timestamp in the future"),
    ("u7,i1,1995-06-01T00:00:00Z,view,,,,,", "timestamp before 2000"),
    (GOOD, "duplicate event"),  # same (user, item, time, event) as row 1
    ("u8,i999,2024-03-01T10:00:00Z,view,,,,,", "unknown item_id"),
    ("u8,i1,2024-03-01T10:00:00Z,view,s8,1.0,1", "wrong field count"),  # 7 of 9 fields
    ('u8,"i1,2024-03-01T10:00:00Z,view,s8,1.0,1,,', "broken quoting"),
    (b"u8,i\xff1,2024-03-01T10:00:00Z,view,s8,1.0,1,,", "non-UTF-8 bytes"),
    ("u8,i1,2024-03-01T10:00:00Z,view," + "s" * 5000 + ",1.0,1,,", "session_id too long"),
    ('"u9","i1","2024-03-02T10:00:00Z","view","s9","1.0","1","",""', None),  # quoted fields are fine
    ("u" * 300 + ",i1,2024-03-01T10:00:00Z,view,s8,1.0,1,,", "user_id too long"),  # checked before hashing
]
ITEMS = "item_id,title,category,brand,price\ni1,Mug,Kitchen,Acme,9.99\ni2,Pan,Kitchen,Acme,19.5\ni3,Pot,Kitchen,,\n"
USERS = "user_id,region,email,phone,full_name,address\nu1,EU,a@b.c,+4412345,Ann Smith,1 Road\n"


def write_events(path: Path, rows: list[tuple[bytes | str, str | None]], bom: bool = True) -> None:
    lines = [r.encode() if isinstance(r, str) else r for r, _ in rows]
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join([HEADER.encode(), *lines]) + b"\n")


@dataclass
class Run:
    cfg: RunConfig
    result: ValidationResult
    quarantine: pd.DataFrame
    validated: pd.DataFrame
    events: Path


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("shop")
    write_events(folder / "events.csv", ROWS)  # with a byte-order mark
    (folder / "items.csv").write_text(ITEMS)
    (folder / "users.csv").write_text(USERS)
    source = {
        "dataset": None,
        "interactions": str(folder / "events.csv"),
        "items": str(folder / "items.csv"),
        "users": str(folder / "users.csv"),
    }
    cfg = RunConfig.from_env(home=tmp_path_factory.mktemp("home"), source=source, max_reject_share=1.0)
    ingest(cfg)
    result = validate(cfg)
    return Run(
        cfg,
        result,
        pd.read_parquet(cfg.paths.quarantine / "interactions.parquet").set_index("source_row"),
        pd.read_parquet(cfg.paths.validated / "interactions.parquet"),
        folder / "events.csv",
    )


REJECTED = [(row, reason) for row, (_, reason) in enumerate(ROWS, start=1) if reason]


@pytest.mark.parametrize(("row", "reason"), REJECTED, ids=[r for _, r in REJECTED])
def test_each_bad_row_is_quarantined_with_file_row_reason_and_original(
    dirty: Run, row: int, reason: str
) -> None:
    entry = dirty.quarantine.loc[row]
    assert entry["reason"] == reason
    assert entry["source_file"] == str(dirty.events)
    original = json.loads(entry["original"])
    raw = ROWS[row - 1][0]
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    if "line" in original:  # the line could not be split into fields: its text is kept
        assert original["line"] == text
    else:  # the fields as read (user ids pseudonymised)
        assert original["item_id"] is None if reason == "null item_id" else original["item_id"] in text
        assert original["event_type"] in text.lower()


def test_only_the_bad_rows_are_rejected_and_nothing_is_lost(dirty: Run) -> None:
    assert sorted(dirty.quarantine.index) == [row for row, _ in REJECTED]
    accepted = [row for row, (_, reason) in enumerate(ROWS, start=1) if reason is None]
    assert sorted(dirty.validated["source_row"]) == accepted
    result = dirty.result
    assert result.rows_read["interactions"] == len(ROWS)
    assert result.accepted["interactions"] + result.rejected["interactions"] == len(ROWS)
    assert sum(n for r, n in result.reasons.items() if r != "duplicate user_id") >= len(REJECTED)


def test_mixed_timestamp_formats_and_zones_become_utc(dirty: Run) -> None:
    times = dirty.validated.set_index("source_row")["timestamp"]
    assert times[2] == pd.Timestamp("2024-03-01T08:05:00Z")  # +02:00 -> UTC
    assert times[3] == pd.Timestamp(1709290000, unit="s", tz="UTC")
    assert times[4] == pd.Timestamp(1709290000, unit="s", tz="UTC")  # milliseconds
    assert times[5] == pd.Timestamp("2024-03-01T11:00:00Z")


def test_byte_order_mark_and_quoted_fields_read_cleanly(dirty: Run) -> None:
    row = dirty.validated.set_index("source_row").loc[25]
    assert (row["item_id"], row["event_type"], row["price"]) == ("i1", "view", 1.0)
    assert dirty.validated["user_id"].notna().all()  # the BOM did not rename user_id


def test_user_ids_are_pseudonymised_everywhere(dirty: Run) -> None:
    key = pseudonym_key()
    assert set(dirty.validated["user_id"]) >= {pseudonymise_one("u1", key), pseudonymise_one("u9", key)}
    assert not {"u1", "u2", "u9"} & set(dirty.validated["user_id"])
    assert '"u5"' not in " ".join(dirty.quarantine["original"])  # quarantine holds pseudonyms too


def test_extra_and_personal_columns_are_dropped_and_reported(dirty: Run) -> None:
    report = json.loads((dirty.cfg.paths.reports / "ingest.json").read_text())
    assert report["dropped_columns"]["interactions"] == ["coupon"]
    assert report["dropped_columns"]["users"] == ["email", "phone", "full_name", "address"]
    users = pd.read_parquet(dirty.cfg.paths.validated / "users.parquet")
    assert list(users.columns) == ["user_id", "region", "source_file", "source_row"]


def test_the_run_reports_the_json_summary_shape(dirty: Run) -> None:
    result = dirty.result
    assert result.rejected["interactions"] == len(REJECTED)
    assert {reason for _, reason in REJECTED} <= set(result.reasons)
    assert Path(result.quarantine) == dirty.cfg.paths.quarantine


# ------------------------------------------------------------------ whole-file problems


def _ingest_file(home: Path, path: Path, **extra: str) -> None:
    ingest(RunConfig.from_env(home=home, source={"dataset": None, "interactions": str(path), **extra}))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"events\.csv: file is empty$"),
        (HEADER.encode() + b"\n", r"events\.csv: file is empty \(header only, no data rows\)$"),
        (
            b"user_id,timestamp\nu1,2024-01-01\n",
            r"events\.csv: missing required column 'item_id' .*--item-col\)$",
        ),
        (b"user_id,item_id,user_id\nu1,i1,u2\n", r"events\.csv: header repeats column 'user_id'$"),
        (b"\xff\xfeu\x00s\x00\n", r"events\.csv: header is not UTF-8 text \(byte 0\)$"),
    ],
    ids=["empty file", "header only", "missing column", "repeated column", "binary header"],
)
def test_whole_file_problems_fail_with_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(content)
    with pytest.raises(IngestError, match=message) as err:
        _ingest_file(tmp_path / "home", path)
    assert "\n" not in str(err.value)


def test_unreadable_parquet_and_missing_file_fail_with_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "events.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(IngestError, match=r"events\.parquet: cannot read Parquet file"):
        _ingest_file(tmp_path / "home", broken)
    with pytest.raises(IngestError, match=r"nowhere\.csv: file not found$"):
        _ingest_file(tmp_path / "home", tmp_path / "nowhere.csv")


def test_a_folder_of_csv_and_parquet_files_is_one_source(tmp_path: Path) -> None:
    folder = tmp_path / "events"
    folder.mkdir()
    write_events(folder / "a.csv", ROWS[:3], bom=False)
    pd.DataFrame(
        {
            "user_id": ["u7"],
            "item_id": ["i1"],
            "timestamp": [pd.Timestamp("2024-03-03", tz="UTC")],
            "event_type": ["view"],
        }
    ).to_parquet(folder / "b.parquet")
    cfg = RunConfig.from_env(home=tmp_path / "home", source={"dataset": None, "interactions": str(folder)})
    result = ingest(cfg)
    assert result.rows_read["interactions"] == 4
    canonical = pd.read_parquet(cfg.paths.canonical / "interactions.parquet")
    assert sorted(set(canonical["source_file"])) == [str(folder / "a.csv"), str(folder / "b.parquet")]
    assert canonical.loc[canonical["source_file"].str.endswith("b.parquet"), "source_row"].tolist() == [1]


def test_rejected_share_above_threshold_stops_the_run(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    write_events(path, ROWS)
    cfg = RunConfig.from_env(
        home=tmp_path / "home", source={"dataset": None, "interactions": str(path)}, max_reject_share=0.1
    )
    ingest(cfg)
    with pytest.raises(
        DataValidationError, match=r"of interactions rejected \(max 10\.0%\); see .*quarantine$"
    ):
        validate(cfg)
    assert len(pd.read_parquet(cfg.paths.quarantine / "interactions.parquet")) > 0  # kept for inspection
    assert not (cfg.paths.validated / "interactions.parquet").exists()
