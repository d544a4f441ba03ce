"""Validate stage: the Great Expectations gate between ingestion and everything else.

In:  ``cfg.paths.canonical / <table>.parquet`` (interactions required; items, users, reviews optional) and the
     rows ingestion already rejected (``canonical/rejected/<table>.parquet``).
Out: ``cfg.paths.validated / <table>.parquet`` (rows that passed, same schema as the input),
     ``cfg.paths.quarantine / <table>.parquet`` (every rejected row of the run, from ingestion or from GX, with
     source file, source row, stage, reason, detail and original values as JSON; always written),
     ``cfg.paths.gx / <run label> /`` (GX validation results and data docs), ``cfg.paths.gx / latest.json``,
     and the drift report of the batch (pipelines/drift.py).

Interactions stream through in chunks, so a 10M-row table validates in bounded memory. Each expectation
carries its quarantine reason in ``meta``, so the reason in the data docs and the one next to a rejected row
are the same text. Per chunk: the suite runs on the incoming rows (COMPLETE result format: row ids of every
failure), then a duplicate suite runs on the rows that passed (the first valid copy of a key is kept, across
chunks), then the table suite runs once more on the accepted rows (its ``success`` is the run's flag).
accepted + rejected = rows read, per table, always.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fusionrec.config import RunConfig
from pipelines import datasets
from pipelines.ingest import QUARANTINE_COLUMNS, REJECTED_DIR
from pipelines.readers import CHUNK_ROWS
from pipelines.schema import (
    EVENT_TYPES,
    INTERACTION_COLUMNS,
    INTERACTIONS,
    ITEM_COLUMNS,
    ITEMS,
    MAX_PRICE,
    MAX_QUANTITY,
    MIN_TIMESTAMP,
    RATING_RANGE,
    REVIEW_COLUMNS,
    REVIEWS,
    TABLES,
    USER_COLUMNS,
    USERS,
    table_file,
)
from pipelines.stage import StageResult, run_label

if TYPE_CHECKING:  # GX takes ~5 s to import: only validate() pays for it, not every importer of this module
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.data_context import AbstractDataContext

logger = logging.getLogger(__name__)

ROW_ID = "_gx_row"  # 0-based position added to the frame GX sees, so failures point back at rows
# Referential integrity and duplicates are checked on computed columns: GX has no cross-table or cross-chunk
# check for pandas frames, and a value_set of ~50k item ids makes GX spend seconds per expectation.
ITEM_KNOWN = "_item_id_in_items"
FIRST_COPY = "_first_copy"
SITE = "fusionrec"  # the data docs site of this run
UNCHECKED = ("source_file", "description", "text")  # columns no expectation reads
# The accepted rows of a big table are re-checked on a sample of each chunk (the gate removed every failing
# row already; the re-check confirms it in GX's own terms without doubling the run time).
RECHECK_ROWS = 100_000
REQUIRED_COLUMNS = {
    INTERACTIONS: INTERACTION_COLUMNS[:6],  # price, quantity, source_file are optional in hand-made tables
    ITEMS: ITEM_COLUMNS,
    USERS: USER_COLUMNS,
    REVIEWS: REVIEW_COLUMNS[:3],
}
STRING_TYPES = ["str"]  # object columns are checked value by value (see _gx_frame for "string" dtypes)
# Expected pandas types of optional columns (pipelines/schema.py), checked only when present.
OPTIONAL_TYPES = {
    ITEMS: {
        "title": STRING_TYPES,
        "genres": STRING_TYPES,
        "category": STRING_TYPES,
        "brand": STRING_TYPES,
        "year": ["Int64Dtype", "int64"],
        "price": ["float64"],
    },
    INTERACTIONS: {"price": ["float64"], "quantity": ["float64"]},
}
# Uniqueness keys: later copies of a key are quarantined, the first valid copy is kept.
DUPLICATE_KEYS = {
    INTERACTIONS: ["user_id", "item_id", "timestamp", "event_type", "session_id"],
    ITEMS: ["item_id"],
    USERS: ["user_id"],
    REVIEWS: ["user_id", "item_id"],
}
DUPLICATE_REASONS = {
    INTERACTIONS: "duplicate event",
    ITEMS: "duplicate item_id",
    USERS: "duplicate user_id",
    REVIEWS: "duplicate review",
}

# What an expectation's failure means for the data (stored in the expectation's meta["kind"]).
ROW = "row"  # the unexpected rows are quarantined with meta["reason"]
TABLE = "table"  # the whole table is unusable: DataValidationError


class DataValidationError(Exception):
    """The data cannot go on to the next stage; the message is one line saying why and where to look."""


@dataclass
class ValidationResult(StageResult):
    rows_read: dict[str, int]  # table -> rows read from the source (ingestion's count)
    accepted: dict[str, int]  # table -> rows accepted
    rejected: dict[str, int]  # table -> rows quarantined (at ingestion or here)
    reasons: dict[str, int]  # reason -> rows (a row failing two checks counts for its first reason)
    quarantine: str  # folder with <table>.parquet quarantine files
    gx_result: str  # GX validation result JSON of this run
    data_docs: str  # data docs index.html of this run
    success: bool  # did every GX suite pass on the accepted rows?
    drift: dict[str, Any] = field(default_factory=dict)  # drift of this batch against the last accepted one
    seconds: float = 0.0


@dataclass
class ChunkOutcome:
    """One chunk of a table after the gate: which rows stay, which go and why."""

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
        """Rejected rows in the quarantine layout, original values as JSON."""
        rows = sorted(self.rejected_reasons)
        out = self.frame.iloc[rows]
        source_row = out["source_row"] if "source_row" in out else pd.Series(np.asarray(rows) + 1)
        source_file = out["source_file"] if "source_file" in out else pd.Series([""] * len(rows))
        values = out.drop(columns=[c for c in ("source_file", "source_row") if c in out.columns])
        reasons = [self.rejected_reasons[r] for r in rows]
        return pd.DataFrame(
            {
                "source_file": pd.Series(source_file.to_numpy(), dtype=object),
                "source_row": pd.Series(source_row.to_numpy(), dtype="int64"),
                "stage": pd.Series(["validate"] * len(rows), dtype=object),
                "reason": pd.Series([r[0] for r in reasons], dtype=object),
                "detail": pd.Series(["; ".join(r) for r in reasons], dtype=object),
                "original": pd.Series(
                    [json.dumps(v, default=str, ensure_ascii=False) for v in values.to_dict("records")],
                    dtype=object,
                ),
            }
        )

    def reason_counts(self) -> Counter[str]:
        return Counter(reasons[0] for reasons in self.rejected_reasons.values())


@dataclass
class TableTally:
    """Counts of one table over all its chunks."""

    read: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def validate(cfg: RunConfig) -> ValidationResult:
    """Validate the canonical tables of ``cfg``; write validated and quarantine Parquet and the GX run folder.

    Raises ``DataValidationError`` (one line) when interactions are missing or empty, a required column is
    missing, a column has the wrong type, the rejected share of interactions exceeds
    ``cfg.max_reject_share`` (the quarantine files are written first in that case), or the batch drifted
    and ``cfg.drift_action`` is "fail".
    """
    from pipelines import drift

    started = time.perf_counter()
    cfg = dataclasses.replace(cfg, run_id=run_label(cfg.run_id))  # one label for GX, drift and the reference
    _remove_outputs(cfg.paths.validated, cfg.paths.quarantine)  # a failed run must leave no stale tables
    present = _present_tables(cfg.paths.canonical)
    run_dir = _run_dir(cfg)
    context = _gx_context(run_dir / "data_docs")
    gate = _Gate(cfg, context, run_dir.name)
    staged = cfg.paths.validated.with_name("validated.partial")  # moved into place only if the run passes
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    profile = drift.BatchProfile()
    tallies: dict[str, TableTally] = {}
    quarantine: dict[str, list[pd.DataFrame]] = {}
    for table in (ITEMS, USERS, REVIEWS, INTERACTIONS):  # items first: events must reference accepted items
        if table not in present:
            continue
        tally, q_frames = gate.table(table, present[table], staged / table_file(table), profile)
        ingest_rejects = _read_rejects(cfg.paths.canonical, table)
        tally.read += len(ingest_rejects)
        tally.rejected += len(ingest_rejects)
        tally.reasons.update(ingest_rejects["reason"])
        tallies[table], quarantine[table] = tally, [ingest_rejects, *q_frames]

    success = gate.success
    counts = {t: {"read": v.read, "accepted": v.accepted, "rejected": v.rejected} for t, v in tallies.items()}
    gx_result, data_docs = _write_gx_run(context, run_dir, gate.records, success, counts)
    _write_quarantine(cfg.paths.quarantine, quarantine)
    _check_reject_share(tallies[INTERACTIONS], cfg.max_reject_share, cfg.paths.quarantine)
    drift_result = drift.check_drift(cfg, profile)
    shutil.rmtree(cfg.paths.validated, ignore_errors=True)
    staged.rename(cfg.paths.validated)
    drift.accept_reference(cfg, profile)

    result = ValidationResult(
        rows_read={t: v.read for t, v in tallies.items()},
        accepted={t: v.accepted for t, v in tallies.items()},
        rejected={t: v.rejected for t, v in tallies.items()},
        reasons=dict(sum((v.reasons for v in tallies.values()), Counter()).most_common()),
        quarantine=str(cfg.paths.quarantine),
        gx_result=str(gx_result),
        data_docs=str(data_docs),
        success=success,
        drift=drift_result.to_dict(),
        seconds=round(time.perf_counter() - started, 3),
    )
    for table in tallies:
        logger.info(
            "validate %s: %d read, %d accepted, %d rejected",
            table, result.rows_read[table], result.accepted[table], result.rejected[table],
        )  # fmt: skip
    if result.reasons:
        logger.info("validate reasons: %s", result.reasons)
    logger.info(
        "validate: GX result %s, data docs %s, success on accepted rows: %s", gx_result, data_docs, success
    )
    result.save(cfg.paths.reports, "validate")
    return result


class _Gate:
    """Runs the GX suites of each table chunk by chunk and keeps what the run's record needs."""

    def __init__(self, cfg: RunConfig, context: Any, run_name: str) -> None:
        self.cfg = cfg
        self.context = context
        self.run_name = run_name
        self.item_ids: set[str] | None = None  # accepted items.item_id, once items are validated
        self.records: dict[str, dict[str, list[dict[str, Any]]]] = {"incoming": {}, "accepted": {}}
        self.success = True
        dataset = cfg.source.dataset if not cfg.source.interactions else None
        self.earliest = pd.Timestamp(datasets.EARLIEST.get(dataset or "", MIN_TIMESTAMP), tz="UTC")

    def table(
        self, table: str, path: Path, output: Path, profile: Any
    ) -> tuple[TableTally, list[pd.DataFrame]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tally, quarantined = TableTally(), []
        seen = np.zeros(0, dtype="uint64")  # key hashes of accepted rows so far (duplicates across chunks)
        writer: pq.ParquetWriter | None = None
        suites_ready = False
        known = self.item_ids if table in (INTERACTIONS, REVIEWS) else None
        for number, frame in enumerate(_chunks(path)):
            if not suites_ready:
                _check_required(table, frame, path)
                self._add_suites(table, frame, known is not None)
                suites_ready = True
            outcome = self._chunk(table, frame, known, path)
            accepted = outcome.accepted
            seen = self._duplicates(table, outcome, accepted, seen, known, number)
            accepted = outcome.accepted
            tally.read += len(frame)
            tally.accepted += len(accepted)
            tally.rejected += len(outcome.rejected_reasons)
            tally.reasons.update(outcome.reason_counts())
            if outcome.rejected_reasons:
                quarantined.append(outcome.quarantined)
            sample = (
                accepted
                if len(accepted) <= RECHECK_ROWS
                else accepted.sample(RECHECK_ROWS, random_state=number)
            )
            final = self._run(table, sample, known, "accepted", complete=False)
            self.success &= bool(final.success)
            if table == INTERACTIONS:
                profile.update(accepted)
            arrow = pa.Table.from_pandas(accepted, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(output, arrow.schema)
            writer.write_table(arrow.cast(writer.schema))
        if writer is not None:
            writer.close()
        if table == ITEMS:
            self.item_ids = set(pd.read_parquet(output, columns=["item_id"])["item_id"].dropna())
        return tally, quarantined

    def _add_suites(self, table: str, frame: pd.DataFrame, check_items: bool) -> None:
        import great_expectations as gx

        asset = self.context.data_sources.get("canonical").add_dataframe_asset(table)
        batch = asset.add_batch_definition_whole_dataframe("whole table")
        rows_suite = self.context.suites.add(gx.ExpectationSuite(name=table))
        for expectation in _expectations(table, frame, check_items, self.earliest):
            rows_suite.add_expectation(expectation)
        self.context.validation_definitions.add(
            gx.ValidationDefinition(name=table, data=batch, suite=rows_suite)
        )
        dup_suite = self.context.suites.add(gx.ExpectationSuite(name=f"{table}_duplicates"))
        dup_suite.add_expectation(_duplicate_expectation(table))
        self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{table}_duplicates", data=batch, suite=dup_suite)
        )

    def _chunk(self, table: str, frame: pd.DataFrame, known: set[str] | None, path: Path) -> ChunkOutcome:
        run = self._run(table, frame, known, "incoming")
        _raise_table_failure(run, path)
        outcome = ChunkOutcome(table, frame)
        for check in run.results:
            if not check.success:
                reason = _reason(check)
                for row in _unexpected_rows(check.result) or []:
                    outcome.rejected_reasons.setdefault(row, []).append(reason)
        return outcome

    def _duplicates(
        self,
        table: str,
        outcome: ChunkOutcome,
        survivors: pd.DataFrame,
        seen: np.ndarray,
        known: set[str] | None,
        number: int,
    ) -> np.ndarray:
        """GX-check the rows that passed for keys seen before (in this chunk or earlier ones); reject later
        copies in ``outcome``; return the key hashes seen so far."""
        positions = np.setdiff1d(np.arange(len(outcome.frame)), list(outcome.rejected_reasons))
        hashes = pd.util.hash_pandas_object(survivors[DUPLICATE_KEYS[table]], index=False).to_numpy()
        first = ~pd.Series(hashes).duplicated().to_numpy()
        if len(seen):
            first &= ~np.isin(hashes, seen, assume_unique=False)
        checked = survivors.assign(**{FIRST_COPY: first})
        definition = self.context.validation_definitions.get(f"{table}_duplicates")
        run = definition.run(
            batch_parameters={"dataframe": checked.assign(**{ROW_ID: positions})},
            result_format=_COMPLETE,
            run_id=self._run_id("incoming"),
        )
        self._record("incoming", f"{table}_duplicates", run)
        for check in run.results:
            for row in _unexpected_rows(check.result) or []:
                outcome.rejected_reasons[int(row)] = [_reason(check)]
        return np.union1d(seen, hashes[first])

    def _run(
        self, table: str, frame: pd.DataFrame, known: set[str] | None, phase: str, complete: bool = True
    ) -> ExpectationSuiteValidationResult:
        definition = self.context.validation_definitions.get(table)
        run = definition.run(
            batch_parameters={"dataframe": _gx_frame(frame, known)},
            result_format=_COMPLETE if complete else {"result_format": "SUMMARY"},
            run_id=self._run_id(phase),
        )
        self._record(phase, table, run)
        return run

    def _run_id(self, phase: str) -> Any:
        from great_expectations.core.run_identifier import RunIdentifier

        return RunIdentifier(run_name=f"{self.run_name}-{phase}", run_time=datetime.now(UTC))

    def _record(self, phase: str, name: str, run: Any) -> None:
        """Keep a compact copy of the result: counts per expectation, not the full row lists."""
        record = run.to_json_dict()
        for check in record.get("results", []):
            for key in ("unexpected_index_list", "unexpected_list", "unexpected_index_query"):
                check.get("result", {}).pop(key, None)
        self.records[phase].setdefault(name, []).append(record)


_COMPLETE = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW_ID],
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 20,
}


# ---------------------------------------------------------------- input


def _present_tables(canonical: Path) -> dict[str, Path]:
    """The canonical tables that exist (interactions required, and not empty)."""
    import pyarrow.parquet as pq

    present = {t: canonical / table_file(t) for t in TABLES if (canonical / table_file(t)).exists()}
    path = canonical / table_file(INTERACTIONS)
    if INTERACTIONS not in present:
        raise DataValidationError(f"validation failed: {path} not found (run ingest first)")
    if pq.ParquetFile(path).metadata.num_rows == 0 and not len(_read_rejects(canonical, INTERACTIONS)):
        raise DataValidationError(f"validation failed: {path} has no rows")
    return present


def _chunks(path: Path) -> Iterator[pd.DataFrame]:
    """The table in chunks of ``CHUNK_ROWS`` rows (at least one chunk, possibly empty)."""
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    if handle.metadata.num_rows == 0:
        yield handle.schema_arrow.empty_table().to_pandas()
        return
    for batch in handle.iter_batches(batch_size=CHUNK_ROWS):
        yield batch.to_pandas()


def _check_required(table: str, frame: pd.DataFrame, path: Path) -> None:
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"validation failed: {path} is missing required column {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )


def _read_rejects(canonical: Path, table: str) -> pd.DataFrame:
    path = canonical / REJECTED_DIR / table_file(table)
    if path.exists():
        return pd.read_parquet(path)
    return pd.DataFrame(
        {c: pd.Series(dtype="int64" if c == "source_row" else object) for c in QUARANTINE_COLUMNS}
    )


def _run_dir(cfg: RunConfig) -> Path:
    """``cfg.paths.gx / <run label>``, emptied."""
    run_dir = cfg.paths.gx / run_label(cfg.run_id)
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


def _expectations(table: str, frame: pd.DataFrame, check_items: bool, earliest: pd.Timestamp) -> list[Any]:
    """The expectations of one table, each with ``meta = {"kind": ROW|TABLE, "reason": text}``."""
    import great_expectations.expectations as gxe

    def meta(kind: str, reason: str) -> dict[str, str]:
        return {"kind": kind, "reason": reason}

    def string_type(column: str) -> Any:
        return gxe.ExpectColumnValuesToBeInTypeList(
            column=column, type_list=STRING_TYPES, meta=meta(ROW, f"{column} not a string")
        )

    def not_null(column: str) -> Any:
        return gxe.ExpectColumnValuesToNotBeNull(column=column, meta=meta(ROW, f"null {column}"))

    def between(column: str, reason: str, low: Any = None, high: Any = None, strict_low: bool = False) -> Any:
        return gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=low, max_value=high, strict_min=strict_low, meta=meta(ROW, reason)
        )

    def typed(column: str, types: list[str]) -> Any:
        return gxe.ExpectColumnValuesToBeInTypeList(
            column=column, type_list=types, meta=meta(TABLE, f"{column} type")
        )

    exps: list[Any] = [
        gxe.ExpectColumnToExist(column=c, meta=meta(TABLE, f"missing column {c}"))
        for c in REQUIRED_COLUMNS[table]
    ]
    tomorrow = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)
    if table in (INTERACTIONS, REVIEWS):
        exps += [
            string_type(c)
            for c in ("user_id", "item_id") + (("event_type", "session_id") if table == INTERACTIONS else ())
        ]
        exps += [typed("rating", ["float64"])]
        if "timestamp" in frame.columns:
            # "Timestamp" is the scalar type of a tz-aware datetime column (naive datetimes fail).
            exps.append(
                gxe.ExpectColumnValuesToBeOfType(
                    column="timestamp", type_="Timestamp", meta=meta(TABLE, "timestamp type")
                )
            )
        exps += [not_null(c) for c in ("user_id", "item_id")]
        if table == INTERACTIONS:
            exps += [typed("source_row", ["int64"]), not_null("timestamp"), not_null("event_type")]
            exps += [typed(c, t) for c, t in OPTIONAL_TYPES[INTERACTIONS].items() if c in frame.columns]
        if "timestamp" in frame.columns:
            # "between" skips nulls: timestamps are required above, ratings and prices are optional.
            exps += [
                between("timestamp", f"timestamp before {earliest.year}", low=earliest),
                between("timestamp", "timestamp in the future", high=tomorrow),
            ]
        low, high = (1.0, 5.0) if table == REVIEWS else RATING_RANGE
        exps.append(between("rating", "rating out of range", low, high))
        if table == INTERACTIONS:
            exps.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column="event_type", value_set=list(EVENT_TYPES), meta=meta(ROW, "unknown event_type")
                )
            )
            if "price" in frame.columns:
                exps += [
                    between("price", "negative price", low=0.0),
                    between("price", "absurd price", high=MAX_PRICE),
                ]
            if "quantity" in frame.columns:
                exps += [
                    between("quantity", "quantity not positive", low=0.0, strict_low=True),
                    between("quantity", "absurd quantity", high=MAX_QUANTITY),
                ]
        if check_items:
            exps.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=ITEM_KNOWN,
                    value_set=[True],
                    meta=meta(ROW, "unknown item_id") | {"means": "item_id is an accepted items.item_id"},
                )
            )
        return exps
    id_col = DUPLICATE_KEYS[table][0]
    exps += [string_type(id_col), not_null(id_col)]
    if table == ITEMS:
        exps += [typed(c, types) for c, types in OPTIONAL_TYPES[ITEMS].items() if c in frame.columns]
        if "price" in frame.columns:
            exps += [
                between("price", "negative price", low=0.0),
                between("price", "absurd price", high=MAX_PRICE),
            ]
    return exps


def _duplicate_expectation(table: str) -> Any:
    """Later copies of a key fail; ``FIRST_COPY`` is computed over the rows that passed everything else."""
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeInSet(
        column=FIRST_COPY,
        value_set=[True],
        meta={
            "kind": ROW,
            "reason": DUPLICATE_REASONS[table],
            "means": f"first valid copy of ({', '.join(DUPLICATE_KEYS[table])}) in the batch",
        },
    )


def _gx_frame(frame: pd.DataFrame, item_ids: set[str] | None) -> pd.DataFrame:
    """What GX sees: the checked columns of ``frame`` plus the row id and, given ``item_ids``, item membership.

    Columns no expectation reads (e.g. ``source_file``) are left out: GX copies the frame per metric.
    pandas "string" columns are shown to GX as object: GX's type check cannot tell string[pyarrow] from
    string[python] and would fail the whole column; as object every value is checked to be a str.
    """
    columns = [c for c in frame.columns if c not in UNCHECKED]
    extra: dict[str, Any] = {ROW_ID: np.arange(len(frame), dtype="int64")}
    extra |= {c: frame[c].astype(object) for c in frame[columns].select_dtypes("string").columns}
    if item_ids is not None:
        extra[ITEM_KNOWN] = frame["item_id"].isin(item_ids) | frame["item_id"].isna()  # nulls: own reason
    return frame[columns].assign(**extra)


# ---------------------------------------------------------------- GX result -> rows


def _raise_table_failure(run: ExpectationSuiteValidationResult, path: Path) -> None:
    """Raise DataValidationError if a check failed for the whole table (wrong dtype) or GX could not run it.

    Type failures are reported first: they are the cause when another check then errors (e.g. comparing a
    naive timestamp column with a UTC bound).
    """
    problems: list[tuple[int, str]] = []
    for check in run.results:
        kind, reason = (check.expectation_config.meta or {}).get("kind", ROW), _reason(check)
        if error := _gx_error(check):
            problems.append((1, f"{reason}: GX could not check it ({error})"))
        elif not check.success and (kind == TABLE or _unexpected_rows(check.result) is None):
            observed = check.result.get("observed_value")
            problems.append((0, reason + (f" (observed {observed})" if observed is not None else "")))
    if problems:
        raise DataValidationError(f"validation failed: {path}: {min(problems)[1]}")


def _reason(check: Any) -> str:
    return (check.expectation_config.meta or {}).get("reason", check.expectation_config.type)


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


# ---------------------------------------------------------------- outputs


def _write_gx_run(
    context: Any,
    run_dir: Path,
    records: dict[str, dict[str, list[dict[str, Any]]]],
    success: bool,
    counts: dict[str, dict[str, int]],
) -> tuple[Path, Path]:
    """Write the run's GX results (one per suite and chunk, row lists left out: the quarantine has the rows)
    and data docs, refresh ``latest.json``; return (result JSON, index.html)."""
    gx_result = run_dir / "validation_result.json"
    record = {"run": run_dir.name, "success_on_accepted_rows": success, "rows": counts, **records}
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


def _write_quarantine(folder: Path, quarantine: dict[str, list[pd.DataFrame]]) -> None:
    """One Parquet per table (``QUARANTINE_COLUMNS``), empty when nothing was rejected: DVC outs always exist."""
    folder.mkdir(parents=True, exist_ok=True)
    for table, frames in quarantine.items():
        frame = pd.concat(frames, ignore_index=True)[list(QUARANTINE_COLUMNS)]
        frame.sort_values(["source_file", "source_row"], kind="stable").to_parquet(
            folder / table_file(table), index=False
        )


def _remove_outputs(*folders: Path) -> None:
    for folder in folders:
        for table in TABLES:
            (folder / table_file(table)).unlink(missing_ok=True)


def _check_reject_share(interactions: TableTally, max_share: float, quarantine: Path) -> None:
    """Raise if too many interactions were rejected (the quarantine is already written)."""
    share = interactions.rejected / max(interactions.read, 1)
    if share > max_share:
        raise DataValidationError(
            f"validation failed: {share:.1%} of interactions rejected (max {max_share:.1%}); see {quarantine}"
        )
