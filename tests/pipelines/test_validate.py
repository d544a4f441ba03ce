"""Validate stage: GX suites on tiny hand-made canonical tables (and one real ML-100k run, marked slow)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import RunConfig
from pipelines.ingest import QUARANTINE_COLUMNS, ingest
from pipelines.validate import DataValidationError, ValidationResult, validate

T0 = pd.Timestamp("2020-01-01", tz="UTC")

# One row per line: (user_id, item_id, rating, day offset from T0, event_type, expected reason or None).
# source_row is the 1-based line number. Items are i1..i3 (+ a duplicate i2), users u1..u9.
DIRTY_ROWS = [
    ("u1", "i1", 4.0, 0, "rating", None),
    (None, "i1", 3.0, 1, "rating", "null user_id"),
    ("u2", "i2", 11.0, 2, "rating", "rating out of range"),
    ("u3", "i3", None, 3, "bogus", "unknown event_type"),
    ("u1", "i1", 5.0, 0, "rating", "duplicate event"),  # same key as line 1: later copy goes
    ("u4", "i9", 2.0, 4, "rating", "unknown item_id"),
    ("u5", "i2", 1.0, 30_000, "rating", "timestamp in the future"),  # year 2102
    ("u6", "i3", None, 5, "view", None),  # ratings are optional
    ("u7", "i1", -1.0, 6, "bogus", "rating out of range"),  # the first failed check is the reason...
    ("u8", "i2", 11.0, 7, "rating", "rating out of range"),  # invalid first copy of the next key...
    ("u8", "i2", 3.0, 7, "rating", None),  # ...so this valid later copy is the one kept
    ("u9", "i3", 2.0, 8, "purchase", None),
]


def interactions_frame(rows: list[tuple]) -> pd.DataFrame:
    """Canonical interactions (pipelines/schema.py dtypes) from (user, item, rating, day, event, _) tuples."""
    return pd.DataFrame(
        {
            "user_id": pd.Series([r[0] for r in rows], dtype=object),
            "item_id": pd.Series([r[1] for r in rows], dtype=object),
            "rating": pd.Series([r[2] for r in rows], dtype="float64"),
            "timestamp": pd.DatetimeIndex([T0 + pd.Timedelta(days=r[3]) for r in rows]).as_unit("ns"),
            "event_type": pd.Series([r[4] for r in rows], dtype=object),
            "session_id": pd.Series([None] * len(rows), dtype=object),
            "source_row": np.arange(1, len(rows) + 1, dtype="int64"),
        }
    )


def write_canonical(cfg: RunConfig, **tables: pd.DataFrame) -> None:
    cfg.paths.canonical.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(cfg.paths.canonical / f"{name}.parquet", index=False)


def dirty_tables() -> dict[str, pd.DataFrame]:
    return {
        "interactions": interactions_frame(DIRTY_ROWS),
        "items": pd.DataFrame({"item_id": ["i1", "i2", "i3", "i2"], "title": ["A", "B", "C", "B again"]}),
        "users": pd.DataFrame({"user_id": [f"u{i}" for i in range(1, 10)], "age": np.arange(20, 29)}),
    }


@dataclass
class Run:
    cfg: RunConfig
    result: ValidationResult


@pytest.fixture(scope="module")
def dirty_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One validation of the dirty tables, shared by the tests that only read its outputs (GX is slow-ish)."""
    cfg = RunConfig.from_env(
        home=tmp_path_factory.mktemp("home"), max_reject_share=1.0, run_id="manual__t:1+0"
    )
    write_canonical(cfg, **dirty_tables())
    return Run(cfg, validate(cfg))


def read_out(cfg: RunConfig, kind: str, table: str) -> pd.DataFrame:
    folder = cfg.paths.validated if kind == "validated" else cfg.paths.quarantine
    return pd.read_parquet(folder / f"{table}.parquet")


# ------------------------------------------------------------------ row-level checks


def test_each_bad_row_is_quarantined_with_its_reason_and_source_row(dirty_run: Run) -> None:
    quarantine = read_out(dirty_run.cfg, "quarantine", "interactions")
    expected = {line: r[5] for line, r in enumerate(DIRTY_ROWS, start=1) if r[5]}
    assert dict(zip(quarantine["source_row"], quarantine["reason"], strict=True)) == expected
    assert list(quarantine.columns) == list(QUARANTINE_COLUMNS)
    assert set(quarantine["stage"]) == {"validate"}
    # ...and the detail lists every failed check
    assert quarantine.set_index("source_row").loc[9, "detail"] == "rating out of range; unknown event_type"
    # original values are kept next to the reason
    bad_rating = json.loads(quarantine.set_index("source_row").loc[3, "original"])
    assert (bad_rating["user_id"], bad_rating["item_id"], bad_rating["rating"]) == ("u2", "i2", 11.0)


def test_valid_rows_pass_with_the_input_schema(dirty_run: Run) -> None:
    validated = read_out(dirty_run.cfg, "validated", "interactions")
    assert validated["source_row"].tolist() == [line for line, r in enumerate(DIRTY_ROWS, 1) if r[5] is None]
    assert list(validated.columns) == list(interactions_frame(DIRTY_ROWS).columns)
    assert validated.dtypes.to_dict() == interactions_frame(DIRTY_ROWS).dtypes.to_dict()


def test_accepted_plus_rejected_is_rows_read(dirty_run: Run) -> None:
    result = dirty_run.result
    read = {name: len(frame) for name, frame in dirty_tables().items()}
    assert {t: result.accepted[t] + result.rejected[t] for t in read} == read
    assert result.rejected == {"interactions": 8, "items": 1, "users": 0}
    assert result.reasons["rating out of range"] == 3
    assert result.reasons["duplicate item_id"] == 1
    assert result.success  # GX re-run on the accepted rows passes


def test_duplicate_item_keeps_first_copy_and_gets_source_row(dirty_run: Run) -> None:
    items = read_out(dirty_run.cfg, "validated", "items")
    quarantine = read_out(dirty_run.cfg, "quarantine", "items")
    assert items["title"].tolist() == ["A", "B", "C"]
    assert quarantine[["source_row", "reason"]].values.tolist() == [[4, "duplicate item_id"]]
    assert json.loads(quarantine["original"].iloc[0]) == {"item_id": "i2", "title": "B again"}


def test_nothing_rejected_still_writes_an_empty_quarantine_with_columns(dirty_run: Run) -> None:
    quarantine = read_out(dirty_run.cfg, "quarantine", "users")
    assert quarantine.empty
    assert list(quarantine.columns) == list(QUARANTINE_COLUMNS)


# ------------------------------------------------------------------ GX artefacts and report


def test_gx_result_data_docs_and_latest_pointer_are_kept_per_run(dirty_run: Run) -> None:
    cfg, result = dirty_run.cfg, dirty_run.result
    run_dir = cfg.paths.gx / "manual__t_1_0"  # run id made folder-safe
    assert Path(result.gx_result).parent == run_dir
    assert Path(result.data_docs) == run_dir / "data_docs" / "index.html"
    assert Path(result.data_docs).exists()
    assert list((run_dir / "data_docs" / "validations").glob("interactions/*incoming*/*/*.html"))
    record = json.loads(Path(result.gx_result).read_text())
    tables = {"interactions", "items", "users"}
    assert set(record["incoming"]) == tables | {f"{t}_duplicates" for t in tables}
    assert record["incoming"]["interactions"][0]["success"] is False  # one result per chunk
    assert record["incoming"]["interactions_duplicates"][0]["success"] is False
    assert record["accepted"]["interactions"][0]["success"] is True
    latest = json.loads((cfg.paths.gx / "latest.json").read_text())
    assert latest["gx_result"] == result.gx_result and latest["data_docs"] == result.data_docs
    report = json.loads((cfg.paths.reports / "validate.json").read_text())
    assert report["rejected"]["interactions"] == 8


# ------------------------------------------------------------------ failures


def test_too_many_rejected_raises_one_line_and_keeps_the_quarantine(tmp_path: Path) -> None:
    cfg = RunConfig.from_env(home=tmp_path, max_reject_share=0.05)
    write_canonical(cfg, **dirty_tables())
    cfg.paths.validated.mkdir(parents=True)
    (cfg.paths.validated / "interactions.parquet").write_bytes(b"from an earlier run")  # must not survive
    with pytest.raises(DataValidationError) as err:
        validate(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"validation failed: 66.7% of interactions rejected (max 5.0%); see {cfg.paths.quarantine}"
    )  # 8 of 12 rows
    assert len(read_out(cfg, "quarantine", "interactions")) == 8
    assert not (cfg.paths.validated / "interactions.parquet").exists()


def test_missing_required_column_raises_naming_file_and_column(tmp_path: Path) -> None:
    cfg = RunConfig.from_env(home=tmp_path)
    write_canonical(cfg, interactions=interactions_frame(DIRTY_ROWS[:1]).drop(columns=["event_type"]))
    with pytest.raises(
        DataValidationError, match=r"interactions\.parquet is missing required column 'event_type'$"
    ):
        validate(cfg)


def test_missing_interactions_file_raises(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="interactions.parquet not found"):
        validate(RunConfig.from_env(home=tmp_path))


def test_wrong_column_type_fails_the_whole_table(tmp_path: Path) -> None:
    cfg = RunConfig.from_env(home=tmp_path)
    naive = interactions_frame(DIRTY_ROWS[:1]).assign(timestamp=pd.Timestamp("2020-01-01"))  # no time zone
    write_canonical(cfg, interactions=naive)
    with pytest.raises(
        DataValidationError, match=r"interactions\.parquet: timestamp type \(observed datetime64\)$"
    ):
        validate(cfg)


def test_interactions_alone_validate_without_item_check(tmp_path: Path) -> None:
    cfg = RunConfig.from_env(home=tmp_path)
    clean = [r for r in DIRTY_ROWS if r[5] is None or r[5] == "unknown item_id"]  # i9 is fine without items
    frame = interactions_frame(clean).astype({"user_id": "string"})  # pandas "string" ids are strings too
    write_canonical(cfg, interactions=frame)
    result = validate(cfg)
    assert result.rejected == {"interactions": 0}
    assert result.accepted == {"interactions": len(clean)}
    assert sorted(p.name for p in cfg.paths.validated.iterdir()) == ["interactions.parquet"]
    assert read_out(cfg, "validated", "interactions")["user_id"].dtype == "string"


def test_integer_ids_fail_the_whole_table(tmp_path: Path) -> None:
    cfg = RunConfig.from_env(home=tmp_path)
    write_canonical(
        cfg, interactions=interactions_frame(DIRTY_ROWS[:1]), items=pd.DataFrame({"item_id": [1, 2]})
    )
    with pytest.raises(
        DataValidationError, match=r"items\.parquet: item_id not a string \(observed int64\)$"
    ):
        validate(cfg)


# ------------------------------------------------------------------ real data


@pytest.mark.slow
def test_ml100k_validates_clean_and_fast(tmp_path: Path) -> None:
    cfg = RunConfig.from_env(home=tmp_path)
    ingest(cfg)  # the real ML-100k, through the ingest stage
    interactions = pd.read_parquet(cfg.paths.canonical / "interactions.parquet")
    import great_expectations  # noqa: F401  -- import cost (~5-10 s) is not the stage's run time

    start = time.perf_counter()
    result = validate(cfg)
    seconds = time.perf_counter() - start
    assert result.accepted == {"interactions": 100_000, "items": 1682, "users": 943}
    assert result.rejected == {"interactions": 0, "items": 0, "users": 0}
    assert result.success
    assert pd.read_parquet(cfg.paths.validated / "interactions.parquet").equals(interactions)
    assert seconds < 30, f"validate took {seconds:.1f} s"  # ~2-3 s measured; generous for a shared CI box


# ------------------------------------------------------------------ drift between batches


def _batch(purchase_share: float, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    events = np.where(rng.random(n) < purchase_share, "purchase", "view")
    rows = [(f"u{i % 40}", f"i{i % 3 + 1}", None, i // 40, str(e), None) for i, e in enumerate(events)]
    return interactions_frame(rows)


def test_a_drifted_batch_fails_in_fail_mode_and_does_not_become_the_reference(tmp_path: Path) -> None:
    from pipelines.drift import DataDriftError

    cfg = RunConfig.from_env(home=tmp_path, drift_action="fail", run_id="first")
    write_canonical(cfg, interactions=_batch(0.05))
    first = validate(cfg)
    assert first.drift["status"] == "no_reference"

    second = RunConfig.from_env(home=tmp_path, drift_action="fail", run_id="second")
    write_canonical(second, interactions=_batch(0.6))  # the event mix moved: many more purchases
    with pytest.raises(DataDriftError, match=r"event_type_mix PSI [0-9.]+.*> 0\.2") as err:
        validate(second)
    assert "\n" not in str(err.value)
    assert not (cfg.paths.validated / "interactions.parquet").exists()  # like any failed gate: nothing stale
    report = json.loads((cfg.paths.reports / "drift.json").read_text())
    assert report["status"] == "drifted" and report["reference_run"] == "first"

    warn = RunConfig.from_env(home=tmp_path, drift_action="warn", run_id="third")
    assert validate(warn).drift["reference_run"] == "first"  # the failed batch never became the reference
    assert (cfg.paths.validated / "interactions.parquet").exists()  # warn: recorded, the batch goes on
