"""Validate stage: check the canonical tables with Great Expectations, split rows into validated and quarantine.

In:  ``cfg.paths.canonical / {interactions,items,users}.parquet`` (items and users optional).
Out: ``cfg.paths.validated / <table>.parquet`` (rows that passed, same schema as the input),
     ``cfg.paths.quarantine / <table>.parquet`` (rejected rows + ``source_row`` + ``reason``; always written),
     ``cfg.paths.gx / <run label> /`` (GX validation result JSON and data docs) and ``cfg.paths.gx / latest.json``.

Each expectation carries its quarantine reason in ``meta`` so the reason shown in the data docs and the one
written next to a rejected row are the same text. The suites run twice: on the incoming rows (COMPLETE
result format, row ids of every failure -> quarantine) and on the accepted rows (the ``success`` flag).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fusionrec.config import RunConfig
from pipelines.schema import (
    EVENT_TYPES,
    INTERACTION_COLUMNS,
    INTERACTIONS,
    ITEM_COLUMNS,
    ITEMS,
    MIN_TIMESTAMP,
    RATING_RANGE,
    TABLES,
    USER_COLUMNS,
    USERS,
    table_file,
)
from pipelines.stage import StageResult

if TYPE_CHECKING:  # GX takes ~5 s to import: only validate() pays for it, not every importer of this module
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.data_context import AbstractDataContext

logger = logging.getLogger(__name__)

ROW_ID = "_gx_row"  # 0-based position added to the frame GX sees, so failures point back at rows
# Referential integrity is checked on a computed column: GX has no cross-table check for pandas frames, and
# a value_set of ~10k item ids makes GX spend seconds per expectation (measured: 3-4 s vs 0.1 s).
ITEM_KNOWN = "_item_id_in_items"
SITE = "fusionrec"  # the data docs site of this run
REQUIRED_COLUMNS = {INTERACTIONS: INTERACTION_COLUMNS, ITEMS: ITEM_COLUMNS, USERS: USER_COLUMNS}
STRING_TYPES = ["str"]  # object columns are checked value by value (see _gx_frame for "string" dtypes)
# Expected pandas types of optional item columns (pipelines/schema.py), checked only when present.
ITEM_OPTIONAL_TYPES = {
    "title": STRING_TYPES,
    "genres": STRING_TYPES,
    "category": STRING_TYPES,
    "brand": STRING_TYPES,
    "year": ["Int64Dtype", "int64"],
    "price": ["float64"],
}
# Uniqueness keys: later copies of a key are quarantined, the first valid copy is kept.
DUPLICATE_KEYS = {
    INTERACTIONS: ["user_id", "item_id", "timestamp", "event_type"],
    ITEMS: ["item_id"],
    USERS: ["user_id"],
}

# What an expectation's failure means for the data (stored in the expectation's meta["kind"]).
ROW = "row"  # the unexpected rows are quarantined with meta["reason"]
DUPLICATE = "duplicate"  # like ROW, but the first otherwise-valid copy of each key is kept
TABLE = "table"  # the whole table is unusable: DataValidationError


class DataValidationError(Exception):
    """The data cannot go on to the next stage; the message is one line saying why and where to look."""


@dataclass
class ValidationResult(StageResult):
    accepted: dict[str, int]  # table -> rows accepted
    rejected: dict[str, int]  # table -> rows quarantined
    reasons: dict[str, int]  # reason -> rows (a row failing two checks counts for both)
    quarantine: str  # folder with <table>.parquet quarantine files
    gx_result: str  # GX validation result JSON of this run
    data_docs: str  # data docs index.html of this run
    success: bool  # did every GX suite pass on the accepted rows?


@dataclass
class TableOutcome:
    """One table after its incoming-rows validation: which rows stay, which go and why."""

    table: str
    frame: pd.DataFrame  # the rows as read (RangeIndex)
    rejected_reasons: dict[int, list[str]] = field(default_factory=dict)  # row position -> reasons

    @property
    def accepted(self) -> pd.DataFrame:
        keep = np.ones(len(self.frame), dtype=bool)
        keep[list(self.rejected_reasons)] = False
        return self.frame[keep].reset_index(drop=True)

    @property
    def quarantined(self) -> pd.DataFrame:
        """Rejected rows with their original values, ``source_row`` (1-based) and ``reason``."""
        rows = sorted(self.rejected_reasons)
        out = self.frame.iloc[rows].copy()
        if "source_row" not in out.columns:  # items/users may lack it: the row in the canonical file
            out["source_row"] = np.asarray(rows, dtype="int64") + 1
        out["reason"] = pd.Series(
            ["; ".join(self.rejected_reasons[r]) for r in rows], index=out.index, dtype=object
        )
        return out.reset_index(drop=True)

    def reason_counts(self) -> Counter[str]:
        return Counter(reason for reasons in self.rejected_reasons.values() for reason in reasons)


def validate(cfg: RunConfig) -> ValidationResult:
    """Validate the canonical tables of ``cfg`` and write validated/quarantine Parquet and the GX run folder.

    Raises ``DataValidationError`` (one line) when interactions are missing or empty, a required column is
    missing, a column has the wrong type, or the rejected share of interactions exceeds
    ``cfg.max_reject_share`` (the quarantine files are written first in that case).
    """
    _remove_outputs(cfg.paths.validated, cfg.paths.quarantine)  # a failed run must leave no stale tables
    frames = _read_canonical(cfg.paths.canonical)
    run_dir = _run_dir(cfg)
    context = _gx_context(run_dir / "data_docs")

    outcomes: dict[str, TableOutcome] = {}
    incoming: dict[str, ExpectationSuiteValidationResult] = {}
    item_ids: set[str] | None = None  # accepted items.item_id, once items are validated
    for table in (ITEMS, USERS, INTERACTIONS):  # items first: interactions must reference accepted items
        if table not in frames:
            continue
        known = item_ids if table == INTERACTIONS else None
        suite = _build_suite(context, table, frames[table], check_items=known is not None)
        incoming[table] = _run_suite(context, table, suite, frames[table], known, f"{run_dir.name}-incoming")
        outcomes[table] = _row_outcome(table, frames[table], incoming[table], cfg.paths.canonical)
        if table == ITEMS:
            item_ids = set(outcomes[ITEMS].accepted["item_id"].dropna())

    accepted_runs = {
        table: _run_suite(
            context,
            table,
            None,
            outcome.accepted,
            item_ids if table == INTERACTIONS else None,
            f"{run_dir.name}-accepted",
            complete=False,
        )
        for table, outcome in outcomes.items()
    }
    success = all(r.success for r in accepted_runs.values())
    gx_result, data_docs = _write_gx_run(context, run_dir, incoming, accepted_runs, success)

    _write_quarantine(cfg.paths.quarantine, outcomes)
    _check_reject_share(outcomes[INTERACTIONS], cfg.max_reject_share, cfg.paths.quarantine)
    _write_validated(cfg.paths.validated, outcomes)

    result = ValidationResult(
        accepted={t: len(o.frame) - len(o.rejected_reasons) for t, o in outcomes.items()},
        rejected={t: len(o.rejected_reasons) for t, o in outcomes.items()},
        reasons=dict(sum((o.reason_counts() for o in outcomes.values()), Counter()).most_common()),
        quarantine=str(cfg.paths.quarantine),
        gx_result=str(gx_result),
        data_docs=str(data_docs),
        success=success,
    )
    for table in outcomes:
        logger.info(
            "validate %s: %d accepted, %d rejected", table, result.accepted[table], result.rejected[table]
        )
    if result.reasons:
        logger.info("validate reasons: %s", result.reasons)
    logger.info(
        "validate: GX result %s, data docs %s, success on accepted rows: %s", gx_result, data_docs, success
    )
    result.save(cfg.paths.reports, "validate")
    return result


# ---------------------------------------------------------------- input


def _read_canonical(canonical: Path) -> dict[str, pd.DataFrame]:
    """Read the canonical tables that exist (interactions required) and check their required columns."""
    frames: dict[str, pd.DataFrame] = {}
    for table in (INTERACTIONS, ITEMS, USERS):
        path = canonical / table_file(table)
        if not path.exists():
            if table == INTERACTIONS:
                raise DataValidationError(f"validation failed: {path} not found (run ingest first)")
            logger.info("validate: no %s, skipping that table", path)
            continue
        frame = pd.read_parquet(path).reset_index(drop=True)
        missing = [c for c in REQUIRED_COLUMNS[table] if c not in frame.columns]
        if missing:
            raise DataValidationError(
                f"validation failed: {path} is missing required column {missing[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        frames[table] = frame
    if frames[INTERACTIONS].empty:
        raise DataValidationError(f"validation failed: {canonical / table_file(INTERACTIONS)} has no rows")
    return frames


def _run_dir(cfg: RunConfig) -> Path:
    """``cfg.paths.gx / <run label>``, emptied: the run id (made folder-safe) or a UTC timestamp."""
    label = cfg.run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    run_dir = cfg.paths.gx / (re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "run")
    if run_dir.exists():  # a retried run replaces its own earlier attempt
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    return run_dir


# ---------------------------------------------------------------- GX suites


def _gx_context(docs_dir: Path) -> AbstractDataContext:
    """An in-memory GX context whose only data docs site is ``docs_dir`` (no temp sites, no analytics)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={SITE: site},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(project_config=config, mode="ephemeral")
    context.data_sources.add_pandas("canonical")
    return context


def _build_suite(context: Any, table: str, frame: pd.DataFrame, check_items: bool) -> Any:
    """Add the ExpectationSuite of ``table`` to ``context`` (columns present in ``frame`` decide optional checks)."""
    import great_expectations as gx

    suite = context.suites.add(gx.ExpectationSuite(name=table))
    for expectation in _expectations(table, frame, check_items):
        suite.add_expectation(expectation)
    return suite


def _expectations(table: str, frame: pd.DataFrame, check_items: bool) -> list[Any]:
    """The expectations of one table, each with ``meta = {"kind": ROW|DUPLICATE|TABLE, "reason": text}``."""
    import great_expectations.expectations as gxe

    def meta(kind: str, reason: str) -> dict[str, str]:
        return {"kind": kind, "reason": reason}

    def string_type(column: str) -> Any:
        return gxe.ExpectColumnValuesToBeInTypeList(
            column=column, type_list=STRING_TYPES, meta=meta(ROW, f"{column} not a string")
        )

    def not_null(column: str) -> Any:
        return gxe.ExpectColumnValuesToNotBeNull(column=column, meta=meta(ROW, f"null {column}"))

    exps: list[Any] = [
        gxe.ExpectColumnToExist(column=c, meta=meta(TABLE, f"missing column {c}"))
        for c in REQUIRED_COLUMNS[table]
    ]
    key = DUPLICATE_KEYS[table]
    if table == INTERACTIONS:
        now = pd.Timestamp.now(tz="UTC")
        exps += [string_type(c) for c in ("user_id", "item_id", "event_type", "session_id")]
        exps += [
            gxe.ExpectColumnValuesToBeInTypeList(
                column="rating", type_list=["float64"], meta=meta(TABLE, "rating type")
            ),
            # "Timestamp" is the scalar type of a tz-aware datetime column (naive datetimes fail).
            gxe.ExpectColumnValuesToBeOfType(
                column="timestamp", type_="Timestamp", meta=meta(TABLE, "timestamp type")
            ),
            gxe.ExpectColumnValuesToBeInTypeList(
                column="source_row", type_list=["int64"], meta=meta(TABLE, "source_row type")
            ),
        ]
        exps += [not_null(c) for c in ("user_id", "item_id", "timestamp", "event_type")]
        exps += [
            # "between" skips nulls, which is what ratings need (optional); timestamps are also not-null above.
            gxe.ExpectColumnValuesToBeBetween(
                column="rating",
                min_value=RATING_RANGE[0],
                max_value=RATING_RANGE[1],
                meta=meta(ROW, "rating out of range"),
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="timestamp",
                min_value=pd.Timestamp(MIN_TIMESTAMP, tz="UTC"),
                max_value=now + pd.Timedelta(days=1),
                meta=meta(ROW, "timestamp out of range"),
            ),
            gxe.ExpectColumnValuesToBeInSet(
                column="event_type", value_set=list(EVENT_TYPES), meta=meta(ROW, "unknown event_type")
            ),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=key, meta=meta(DUPLICATE, "duplicate event")),
        ]
        if check_items:
            exps.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=ITEM_KNOWN,
                    value_set=[True],
                    meta=meta(ROW, "unknown item_id")
                    | {"means": "interactions.item_id is an accepted items.item_id"},
                )
            )
        return exps
    id_col = key[0]
    exps += [string_type(id_col), not_null(id_col)]
    exps.append(gxe.ExpectColumnValuesToBeUnique(column=id_col, meta=meta(DUPLICATE, f"duplicate {id_col}")))
    if table == ITEMS:
        exps += [
            gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=types, meta=meta(TABLE, f"{c} type"))
            for c, types in ITEM_OPTIONAL_TYPES.items()
            if c in frame.columns
        ]
    return exps


def _run_suite(
    context: Any,
    table: str,
    suite: Any,
    frame: pd.DataFrame,
    item_ids: set[str] | None,
    run_name: str,
    complete: bool = True,
) -> ExpectationSuiteValidationResult:
    """Validate ``frame`` against the suite of ``table`` (first call: ``suite`` given, definition created).

    ``complete`` asks for every failing row id (the quarantine needs them); otherwise a summary is enough.
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    if suite is not None:
        asset = context.data_sources.get("canonical").add_dataframe_asset(table)
        batch = asset.add_batch_definition_whole_dataframe("whole table")
        context.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=suite))
    definition = context.validation_definitions.get(table)
    result_format: dict[str, Any] = (
        {
            "result_format": "COMPLETE",
            "unexpected_index_column_names": [ROW_ID],
            "return_unexpected_index_query": False,
        }
        if complete
        else {"result_format": "SUMMARY"}
    )
    return definition.run(
        batch_parameters={"dataframe": _gx_frame(frame, item_ids)},
        result_format=result_format,
        run_id=RunIdentifier(run_name=run_name, run_time=datetime.now(UTC)),
    )


def _gx_frame(frame: pd.DataFrame, item_ids: set[str] | None) -> pd.DataFrame:
    """What GX sees: ``frame`` plus the row id and, given ``item_ids``, item membership.

    pandas "string" columns are shown to GX as object: GX's type check cannot tell string[pyarrow] from
    string[python] and would fail the whole column; as object every value is checked to be a str.
    """
    extra: dict[str, Any] = {ROW_ID: np.arange(len(frame), dtype="int64")}
    extra |= {c: frame[c].astype(object) for c in frame.select_dtypes("string").columns}
    if item_ids is not None:
        extra[ITEM_KNOWN] = frame["item_id"].isin(item_ids) | frame["item_id"].isna()  # nulls: own reason
    return frame.assign(**extra)


# ---------------------------------------------------------------- GX result -> rows


def _row_outcome(
    table: str, frame: pd.DataFrame, run: ExpectationSuiteValidationResult, folder: Path
) -> TableOutcome:
    """Turn the per-expectation failures of one table into per-row reasons (or raise for a table failure)."""
    _raise_table_failure(table, run, folder)
    outcome = TableOutcome(table, frame)
    duplicate_checks = []
    for check in run.results:
        if check.success:
            continue
        rows = _unexpected_rows(check.result) or []
        kind, reason = _kind_and_reason(check)
        if kind == DUPLICATE:
            duplicate_checks.append((rows, reason))
        else:
            for row in rows:
                outcome.rejected_reasons.setdefault(row, []).append(reason)
    for rows, reason in duplicate_checks:  # after the row checks: the first *valid* copy is the one kept
        _reject_later_copies(outcome, rows, DUPLICATE_KEYS[table], reason)
    return outcome


def _raise_table_failure(table: str, run: ExpectationSuiteValidationResult, folder: Path) -> None:
    """Raise DataValidationError if a check failed for the whole table (wrong dtype) or GX could not run it.

    Type failures are reported first: they are the cause when another check then errors (e.g. comparing a
    naive timestamp column with a UTC bound).
    """
    problems: list[tuple[int, str]] = []
    for check in run.results:
        kind, reason = _kind_and_reason(check)
        if error := _gx_error(check):
            problems.append((1, f"{reason}: GX could not check it ({error})"))
        elif not check.success and (kind == TABLE or _unexpected_rows(check.result) is None):
            observed = check.result.get("observed_value")
            problems.append((0, reason + (f" (observed {observed})" if observed is not None else "")))
    if problems:
        raise DataValidationError(f"validation failed: {folder / table_file(table)}: {min(problems)[1]}")


def _kind_and_reason(check: Any) -> tuple[str, str]:
    meta = check.expectation_config.meta or {}
    return meta.get("kind", ROW), meta.get("reason", check.expectation_config.type)


def _gx_error(check: Any) -> str | None:
    """First line of the exception GX caught while checking, if any (flat or keyed by metric id)."""
    info = check.exception_info or {}
    found = [info] + [v for v in info.values() if isinstance(v, dict)]
    for entry in found:
        if entry.get("raised_exception") or (entry is not info and entry.get("exception_message")):
            return (str(entry.get("exception_message") or "unknown error").splitlines() or [""])[0][:200]
    return None


def _unexpected_rows(result: dict[str, Any]) -> list[int] | None:
    """Row positions from a COMPLETE result's ``unexpected_index_list``; None when GX gave no row ids."""
    index_list = result.get("unexpected_index_list")
    if index_list is None:
        return None
    return [int(entry[ROW_ID]) for entry in index_list]


def _reject_later_copies(outcome: TableOutcome, rows: list[int], key: list[str], reason: str) -> None:
    """Among GX's duplicate rows not already rejected, keep the first copy of each key, reject the others."""
    candidates = sorted(set(rows) - set(outcome.rejected_reasons))
    later = outcome.frame.iloc[candidates].duplicated(subset=key, keep="first")
    for row in np.asarray(candidates)[later.to_numpy()]:
        outcome.rejected_reasons[int(row)] = [reason]


# ---------------------------------------------------------------- outputs


def _write_gx_run(
    context: Any,
    run_dir: Path,
    incoming: dict[str, ExpectationSuiteValidationResult],
    accepted: dict[str, ExpectationSuiteValidationResult],
    success: bool,
) -> tuple[Path, Path]:
    """Write the run's GX result JSON and data docs, refresh ``latest.json``; return (result, index.html)."""
    gx_result = run_dir / "validation_result.json"
    record = {
        "run": run_dir.name,
        "success_on_accepted_rows": success,
        "incoming": {t: r.to_json_dict() for t, r in incoming.items()},
        "accepted": {t: r.to_json_dict() for t, r in accepted.items()},
    }
    gx_result.write_text(json.dumps(record, indent=1, default=str))
    context.build_data_docs(site_names=[SITE])
    data_docs = run_dir / "data_docs" / "index.html"
    latest = {
        "run": run_dir.name,
        "gx_result": str(gx_result),
        "data_docs": str(data_docs),
        "success": success,
    }
    (run_dir.parent / "latest.json").write_text(json.dumps(latest, indent=2))
    return gx_result, data_docs


def _write_quarantine(folder: Path, outcomes: dict[str, TableOutcome]) -> None:
    """One Parquet per validated table, empty (with columns) when nothing was rejected: DVC outs always exist."""
    folder.mkdir(parents=True, exist_ok=True)
    for table, outcome in outcomes.items():
        outcome.quarantined.to_parquet(folder / table_file(table), index=False)


def _write_validated(folder: Path, outcomes: dict[str, TableOutcome]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for table, outcome in outcomes.items():
        outcome.accepted.to_parquet(folder / table_file(table), index=False)


def _remove_outputs(*folders: Path) -> None:
    for folder in folders:
        for table in TABLES:
            (folder / table_file(table)).unlink(missing_ok=True)


def _check_reject_share(interactions: TableOutcome, max_share: float, quarantine: Path) -> None:
    """Raise if too many interactions were rejected (the quarantine is already written)."""
    share = len(interactions.rejected_reasons) / len(interactions.frame)
    if share > max_share:
        raise DataValidationError(
            f"validation failed: {share:.1%} of interactions rejected (max {max_share:.1%}); see {quarantine}"
        )
