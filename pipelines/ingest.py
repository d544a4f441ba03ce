"""Ingest stage: a bundled dataset or user files -> canonical Parquet tables (see pipelines/schema.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrec.config import RunConfig, SourceConfig
from pipelines import datasets
from pipelines.schema import INTERACTIONS, ITEMS, USERS, table_file
from pipelines.stage import StageResult

log = logging.getLogger(__name__)


class IngestError(ValueError):
    """Bad input file; the message is one line naming the file (and row/column where it applies)."""


@dataclass
class IngestResult(StageResult):
    source: str
    rows: dict[str, int]  # table -> rows written
    output: str  # folder of the canonical tables


def ingest(cfg: RunConfig) -> IngestResult:
    """Read the configured source and write ``cfg.paths.canonical/{interactions,items,users}.parquet``."""
    src = cfg.source
    if src.interactions:
        tables = load_files(src)
    elif src.dataset in datasets.LOADERS:
        tables = datasets.LOADERS[src.dataset]()
    else:
        raise IngestError(
            f"unknown dataset {src.dataset!r}: choose one of {', '.join(datasets.BUNDLED)} or give --interactions FILE"
        )
    out = cfg.paths.canonical
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    for name, frame in ((INTERACTIONS, tables.interactions), (ITEMS, tables.items), (USERS, tables.users)):
        path = out / table_file(name)
        if frame is None:
            path.unlink(missing_ok=True)
            continue
        frame.to_parquet(path, index=False)
        rows[name] = len(frame)
    log.info("ingested %s: %s -> %s", src.name, rows, out)
    result = IngestResult(source=src.name, rows=rows, output=str(out))
    result.save(cfg.paths.reports, "ingest")
    return result


# --- files ------------------------------------------------------------------------------------------------


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as strings (types are checked per column afterwards)."""
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: file is empty")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IngestError(f"{path}: cannot read file: {first_line}") from exc
    if frame.empty:
        raise IngestError(f"{path}: file is empty (no data rows)")
    return frame


def _require(frame: pd.DataFrame, path: Path, column: str, option: str) -> pd.Series:
    if column not in frame.columns:
        have = ", ".join(map(str, frame.columns))
        raise IngestError(f"{path}: missing required column {column!r} (have: {have}; map it with {option})")
    return frame[column]


def _numbers(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Numeric column; the first unparsable value is reported with its row (1-based data row)."""
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna() & values.notna()
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise IngestError(f"{path}: row {pos + 1}, column {column!r}: {values.iloc[pos]!r} is not a number")
    return parsed.astype("float64")


def _timestamps(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Unix seconds (or milliseconds) and/or date strings, value by value -> UTC timestamps."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    numeric = pd.to_numeric(values, errors="coerce")
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    is_number = numeric.notna()
    if is_number.any():
        unit = "ms" if numeric[is_number].abs().max() > 1e11 else "s"
        parsed[is_number] = pd.to_datetime(numeric[is_number], unit=unit, utc=True)
    text = ~is_number & values.notna()
    if text.any():
        parsed[text] = pd.to_datetime(values[text].astype(str), utc=True, errors="coerce", format="mixed")
    bad = parsed.isna() & values.notna()
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise IngestError(
            f"{path}: row {pos + 1}, column {column!r}: {values.iloc[pos]!r} is not a timestamp"
        )
    return parsed


def _ids(values: pd.Series) -> pd.Series:
    # Ids are strings; integer-like floats from Parquet ("12.0") are normalised to "12".
    if pd.api.types.is_float_dtype(values):
        values = values.astype("Int64")
    return values.astype("string").astype(object).where(values.notna(), None)


def load_files(src: SourceConfig) -> datasets.CanonicalTables:
    """Interactions file (+ optional items/users files) with the column mapping of ``src``."""
    path = Path(src.interactions or "")
    raw = read_table(path)
    user = _require(raw, path, src.user_col, "--user-col")
    item = _require(raw, path, src.item_col, "--item-col")
    stamp = _require(raw, path, src.timestamp_col, "--timestamp-col")
    has_rating = src.rating_col in raw.columns
    rating = _numbers(raw[src.rating_col], path, src.rating_col) if has_rating else np.nan
    if src.event_col in raw.columns:
        event = raw[src.event_col].astype("string").str.strip().str.lower().astype(object)
    else:
        event = "rating" if has_rating else "click"
    interactions = pd.DataFrame(
        {
            "user_id": _ids(user),
            "item_id": _ids(item),
            "rating": rating,
            "timestamp": _timestamps(stamp, path, src.timestamp_col),
            "event_type": event,
            "session_id": _ids(raw["session_id"]) if "session_id" in raw.columns else None,
            "source_row": np.arange(1, len(raw) + 1, dtype="int64"),
        }
    )
    items = _side_table(src.items, src.item_col, "item_id", "--item-col")
    users = _side_table(src.users, src.user_col, "user_id", "--user-col")
    return datasets.CanonicalTables(interactions, items, users)


def _side_table(file: str | None, id_col: str, canonical: str, option: str) -> pd.DataFrame | None:
    """Items or users file: the id column renamed to its canonical name, other attributes kept as given."""
    if not file:
        return None
    path = Path(file)
    frame = read_table(path)
    ids = _ids(_require(frame, path, id_col if id_col in frame.columns else canonical, option))
    frame = frame.drop(columns=[c for c in (id_col, canonical) if c in frame.columns])
    frame.insert(0, canonical, ids)
    for column in ("year",):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    if "price" in frame.columns:
        frame["price"] = _numbers(frame["price"], path, "price")
    return frame
