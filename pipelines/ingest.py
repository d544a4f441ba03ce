"""Ingest stage: a bundled dataset, a file or a folder of files -> canonical Parquet tables, streamed.

In:  ``cfg.source`` (pipelines/schema.py for the tables; CSV/TSV/Parquet, one file or a folder).
Out: ``cfg.paths.canonical/<table>.parquet`` (interactions written chunk by chunk, so memory stays bounded
     whatever the file size) and ``cfg.paths.canonical/rejected/<table>.parquet``: rows that could not be
     read or typed (malformed line, broken quoting, non-UTF-8 bytes, a number or timestamp that does not
     parse, an over-long value), each with source file, row, reason and original values.

Ingest types values; it does not judge them: nulls, ranges, unknown event types or items and duplicates are
the validation gate's (pipelines/validate.py), which also merges these rejects into the quarantine. User ids
are pseudonymised here and columns of direct personal data dropped (pipelines/privacy.py), so nothing after
this stage — quarantine included — sees either.

Feedback: with ``cfg.use_feedback`` (default) the click, cart and purchase events the API stored
(serving/events.py: SQLite ``cfg.paths.events_db`` or PostgreSQL ``cfg.events_url``) are appended to the
interactions after the source, so the next retrain learns from them. Impressions and dismissals are not
interactions and stay out. Their user ids are already stored ids (pseudonymised by the API exactly like
here) and are kept as they are. A purchase's price is its order value per unit (a missing quantity counts
as one unit). Feedback on an item the catalogue does not know (items table, or without one the source's
interactions) is rejected here as "unknown item_id": the shop's client can name any id. Their
``source_file`` is ``feedback:<events db>``, ``source_row`` their 1-based position in the store (oldest
first). No events store yet: nothing is appended.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionrec.config import RunConfig, SourceConfig
from pipelines import datasets, privacy
from pipelines.readers import CHUNK_ROWS, RawChunk, Reject, SourceFileError, iter_chunks, read_whole
from pipelines.schema import (
    INTERACTION_COLUMNS,
    INTERACTIONS,
    ITEMS,
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    REVIEWS,
    TABLES,
    USERS,
    table_file,
)
from pipelines.stage import StageResult

log = logging.getLogger(__name__)

REJECTED_DIR = "rejected"  # under the canonical folder
QUARANTINE_COLUMNS = ("source_file", "source_row", "stage", "reason", "detail", "original")


class IngestError(ValueError):
    """A whole file is unusable; the message is one line naming the file (and column where it applies)."""


@dataclass
class IngestResult(StageResult):
    source: str
    rows_read: dict[str, int]  # table -> rows read from the source
    rows: dict[str, int]  # table -> rows written to the canonical tables
    rejected: dict[str, int]  # table -> rows rejected at ingestion (see rejected/<table>.parquet)
    reasons: dict[str, int]  # reason -> rows
    dropped_columns: dict[str, list[str]]  # table -> source columns not ingested (personal data, unknown)
    pseudonymised: bool
    output: str  # folder of the canonical tables
    seconds: float
    rows_per_second: float
    # Feedback events appended to the interactions (also counted in rows_read/rows/rejected above).
    feedback_rows: int = 0  # written to the canonical interactions
    feedback_rejected: int = 0  # rejected at ingestion (e.g. unknown item_id)
    feedback_source: str | None = None  # "feedback:<events db>", None when no events store was read


# Canonical column -> how its values are typed. Tables with ``keep_extra`` keep other columns as text.
ID, TEXT, NUMBER, INTEGER, TIMESTAMP = "id", "text", "number", "integer", "timestamp"
_KINDS: dict[str, dict[str, str]] = {
    INTERACTIONS: {
        "user_id": ID,
        "item_id": ID,
        "rating": NUMBER,
        "timestamp": TIMESTAMP,
        "event_type": ID,
        "session_id": ID,
        "price": NUMBER,
        "quantity": NUMBER,
    },
    ITEMS: {
        "item_id": ID,
        "title": TEXT,
        "description": TEXT,
        "category": TEXT,
        "category_path": TEXT,
        "genres": TEXT,
        "brand": TEXT,
        "price": NUMBER,
        "year": INTEGER,
        "created_at": TIMESTAMP,
    },
    USERS: {"user_id": ID, "signup_time": TIMESTAMP, "region": TEXT},
    REVIEWS: {"user_id": ID, "item_id": ID, "rating": NUMBER, "text": TEXT, "timestamp": TIMESTAMP},
}
_REQUIRED = {
    INTERACTIONS: ("user_id", "item_id", "timestamp"),
    ITEMS: ("item_id",),
    USERS: ("user_id",),
    REVIEWS: ("user_id", "item_id", "rating"),
}
_KEEP_EXTRA = {ITEMS, USERS}  # e.g. ML-100k's age/occupation; interactions and reviews keep only the schema


def ingest(cfg: RunConfig, progress: bool | None = None) -> IngestResult:
    """Read the configured source into ``cfg.paths.canonical``; see the module docstring.

    ``progress``: show a progress bar (rows, rows/s) on stderr; None shows it only on a terminal.
    """
    started = time.perf_counter()
    src = cfg.source
    out = cfg.paths.canonical
    (out / REJECTED_DIR).mkdir(parents=True, exist_ok=True)
    for table in TABLES:  # a re-run must not leave an earlier source's tables behind
        (out / table_file(table)).unlink(missing_ok=True)
        (out / REJECTED_DIR / table_file(table)).unlink(missing_ok=True)
    feedback = load_feedback(cfg) if cfg.use_feedback else None  # first: an unreachable store fails fast
    writer = _Writer(cfg, progress, feedback=feedback)
    try:
        for table, chunks in _sources(src):
            if table == INTERACTIONS and feedback is not None and len(feedback.events):
                chunks = itertools.chain(chunks, feedback.chunks())
            writer.write_table(table, chunks)
    except SourceFileError as exc:
        raise IngestError(str(exc)) from exc
    seconds = time.perf_counter() - started
    read = sum(writer.rows_read.values())
    result = IngestResult(
        source=src.name,
        rows_read=writer.rows_read,
        rows=writer.rows,
        rejected=writer.rejected,
        reasons=dict(writer.reasons.most_common()),
        dropped_columns=writer.dropped,
        pseudonymised=cfg.pseudonymise,
        output=str(out),
        seconds=round(seconds, 3),
        rows_per_second=round(read / seconds, 1) if seconds else 0.0,
        feedback_rows=writer.feedback_rows,
        feedback_rejected=writer.feedback_rejected,
        feedback_source=feedback.label if feedback is not None else None,
    )
    log.info(
        "ingested %s: %s rows read, %s written, %s rejected at ingestion in %.1fs (%.0f rows/s) -> %s",
        src.name, writer.rows_read, writer.rows, writer.rejected, seconds, result.rows_per_second, out,
    )  # fmt: skip
    if feedback is not None:
        log.info(
            "ingest feedback from %s: %d click/cart/purchase events appended, %d rejected",
            feedback.label, writer.feedback_rows, writer.feedback_rejected,
        )  # fmt: skip
    result.save(cfg.paths.reports, "ingest")
    return result


# ---------------------------------------------------------------- sources


def shop_source(folder: Path) -> dict[str, str | None]:
    """The source settings of a folder in the ``fusionrec generate`` layout (events/ and the side tables)."""
    tables = {t: str(folder / f"{t}.parquet") for t in ("items", "users", "reviews")}
    present = {t: path for t, path in tables.items() if Path(path).exists()}
    return {"dataset": None, "interactions": str(folder / "events"), **present}


def _sources(src: SourceConfig) -> Iterator[tuple[str, Iterator[RawChunk]]]:
    """(table, chunks) for every table the source has; items first (small), interactions streamed."""
    if src.interactions:
        files = {ITEMS: src.items, USERS: src.users, REVIEWS: src.reviews}
        for table, file in files.items():
            if file:
                yield table, iter([read_whole(Path(file))])
        yield INTERACTIONS, iter_chunks(Path(src.interactions))
        return
    if src.dataset not in datasets.LOADERS:
        raise IngestError(
            f"unknown dataset {src.dataset!r}: choose one of {', '.join(datasets.BUNDLED)} or give --interactions FILE"
        )
    tables = datasets.LOADERS[src.dataset]()
    for table, frame in ((ITEMS, tables.items), (USERS, tables.users), (INTERACTIONS, tables.interactions)):
        if frame is not None:
            file = frame.attrs.get("source_file", f"{src.dataset}:{table}")
            yield table, iter([RawChunk(file, frame, np.arange(1, len(frame) + 1, dtype="int64"))])


# ---------------------------------------------------------------- writing


class _Writer:
    """Types chunks into canonical tables, writes them, and collects rejects and counts."""

    def __init__(self, cfg: RunConfig, progress: bool | None, feedback: Feedback | None = None) -> None:
        self.cfg = cfg
        self.src = cfg.source
        self.key = privacy.pseudonym_key() if cfg.pseudonymise else None
        self.progress = progress
        self.rows_read: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.reasons: Counter[str] = Counter()
        self.dropped: dict[str, list[str]] = {}
        # Item ids written per table, collected only when feedback events will need the catalogue.
        self.collect_items = feedback is not None and len(feedback.events) > 0
        self.item_ids: dict[str, set[str]] = {}
        self.feedback_rows = 0
        self.feedback_rejected = 0

    def write_table(self, table: str, chunks: Iterator[RawChunk]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from tqdm import tqdm

        path = self.cfg.paths.canonical / table_file(table)
        writer: pq.ParquetWriter | None = None
        rejects: list[Reject] = []
        show = _is_terminal() if self.progress is None else self.progress
        bar = tqdm(desc=f"ingest {table}", unit=" rows", unit_scale=True, disable=not show, mininterval=0.5)
        checked: set[str] = set()
        for chunk in chunks:
            if isinstance(chunk, FeedbackChunk):
                frame, chunk_rejects = self.feedback_typed(chunk)
                self.feedback_rows += len(frame)
                self.feedback_rejected += len(chunk_rejects)
            else:
                if chunk.source_file not in checked:  # whole-file problems: once per file
                    self._check_columns(table, chunk)
                    checked.add(chunk.source_file)
                frame, chunk_rejects = self.typed(table, chunk)
                if self.collect_items and (
                    table == ITEMS or (table == INTERACTIONS and ITEMS not in self.rows)
                ):
                    self.item_ids.setdefault(table, set()).update(pd.unique(frame["item_id"].dropna()))
            rejects += chunk_rejects
            self.rows_read[table] = self.rows_read.get(table, 0) + chunk.rows_read
            self.rows[table] = self.rows.get(table, 0) + len(frame)
            arrow = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, arrow.schema)
            elif arrow.schema != writer.schema:
                arrow = arrow.cast(writer.schema)
            writer.write_table(arrow)
            bar.update(chunk.rows_read)
            if chunk.rows_read >= CHUNK_ROWS:
                rate = bar.format_dict.get("rate") or 0
                log.info("ingest %s: %d rows read (%.0f rows/s)", table, self.rows_read[table], rate)
        bar.close()
        if writer is not None:
            writer.close()
        self.rejected[table] = len(rejects)
        self.reasons.update(r.reason for r in rejects)
        write_rejects(self.cfg.paths.canonical / REJECTED_DIR / table_file(table), rejects)

    def _check_columns(self, table: str, chunk: RawChunk) -> None:
        renames = _renames(self.src, table)
        have = {renames.get(c, c) for c in chunk.frame.columns}
        for column in _REQUIRED[table]:
            if column not in have:
                source_name = next((s for s, c in renames.items() if c == column), column)
                listed = ", ".join(map(str, chunk.frame.columns))
                raise IngestError(
                    f"{chunk.source_file}: missing required column {source_name!r} (have: {listed}"
                    + (f"; map it with {_OPTION[column]})" if column in _OPTION else ")")
                )

    def typed(self, table: str, chunk: RawChunk) -> tuple[pd.DataFrame, list[Reject]]:
        """The canonical rows of ``chunk`` and the rows that could not be typed."""
        raw = chunk.frame.rename(columns=_renames(self.src, table))
        raw = raw.drop(columns=[c for c in ("source_file", "source_row") if c in raw.columns])
        personal = [] if self.cfg.keep_personal_data else privacy.personal_columns(raw.columns)
        kinds = _KINDS[table]
        extra = [c for c in raw.columns if c not in kinds and c not in personal and not c.startswith("_")]
        unknown = [] if table in _KEEP_EXTRA else extra
        self._note_dropped(table, personal, unknown, chunk.source_file)
        raw = raw.drop(columns=personal + unknown)

        out: dict[str, Any] = {}
        problems: list[tuple[np.ndarray, str, str]] = []  # (bad mask, reason, column)
        for column in raw.columns:
            if column.startswith("_"):
                continue
            values, bad, reason = _typed_column(raw[column], kinds.get(column, TEXT), column)
            out[column] = values
            if bad is not None and bad.any():
                problems.append((bad, reason, column))
        if self.key is not None and "user_id" in out:  # after the checks, before anything keeps the raw id
            out["user_id"] = raw["user_id"] = privacy.pseudonymise(out["user_id"], self.key)
        if table == INTERACTIONS:
            out.setdefault("event_type", pd.Series("rating" if "rating" in raw else "click", index=raw.index))
            for column in ("rating", "price", "quantity"):
                out.setdefault(column, pd.Series(np.nan, index=raw.index, dtype="float64"))
            out.setdefault("session_id", pd.Series(None, index=raw.index, dtype=object))
        frame = pd.DataFrame(out, index=raw.index)
        frame["source_file"] = raw.get("_source_file", chunk.source_file)
        frame["source_row"] = chunk.rows
        if table == INTERACTIONS:
            frame = frame[list(INTERACTION_COLUMNS)]

        frame, rejects = _drop_problems(frame, raw, problems)
        return frame, list(chunk.rejects) + rejects

    def feedback_typed(self, chunk: FeedbackChunk) -> tuple[pd.DataFrame, list[Reject]]:
        """Canonical interactions of a chunk of feedback events (stored user ids kept as they are) and the
        events rejected: over-long ids, items the catalogue does not know."""
        events = chunk.frame
        users, items = _ids(events["user_id"]), _ids(events["item_id"])
        quantity = events["quantity"].astype("float64")
        units = quantity.fillna(1.0).where(quantity.isna() | (quantity > 0))  # no quantity: one unit
        purchase = events["event_type"].eq("purchase")
        price = (events["order_value"].astype("float64") / units).where(purchase)
        nan = pd.Series(np.nan, index=events.index, dtype="float64")
        frame = pd.DataFrame(
            {
                "user_id": users,
                "item_id": items,
                "rating": nan,
                "timestamp": events["timestamp"].astype("datetime64[ns, UTC]"),
                "event_type": events["event_type"].map(FEEDBACK_EVENT_TYPES).astype(object),
                "session_id": pd.Series(None, index=events.index, dtype=object),
                "price": price,
                "quantity": quantity,
                "source_file": chunk.source_file,
                "source_row": chunk.rows,
            }
        )
        catalogue, where = self._catalogue()
        unknown = (~items.isin(catalogue) & items.notna()).to_numpy()
        problems = [
            (_too_long(users, MAX_ID_CHARS), "user_id too long", "user_id"),
            (_too_long(items, MAX_ID_CHARS), "item_id too long", "item_id"),
            (unknown, "unknown item_id", "item_id"),
        ]
        frame, rejects = _drop_problems(frame, events, problems)
        for reject in rejects:
            if reject.reason == "unknown item_id":
                reject.detail += f" not in {where}"
        return frame, rejects

    def _catalogue(self) -> tuple[set[str], str]:
        """The item ids feedback may name, and where they come from."""
        if ITEMS in self.rows:
            return self.item_ids.get(ITEMS, set()), "the items table"
        return self.item_ids.get(INTERACTIONS, set()), "the source's interactions (no items table)"

    def _note_dropped(self, table: str, personal: list[str], unknown: list[str], file: str) -> None:
        known = self.dropped.setdefault(table, [])
        for column in personal:
            if column not in known:
                known.append(column)
                log.warning("ingest %s: dropped column %r of %s: direct personal data", table, column, file)
        for column in unknown:
            if column not in known:
                known.append(column)
                log.warning(
                    "ingest %s: dropped column %r of %s: not in the canonical schema", table, column, file
                )


_OPTION = {"user_id": "--user-col", "item_id": "--item-col", "timestamp": "--timestamp-col"}


def _renames(src: SourceConfig, table: str) -> dict[str, str]:
    """Source column name -> canonical name, for the columns the source maps."""
    if table == INTERACTIONS:
        pairs = {
            src.user_col: "user_id",
            src.item_col: "item_id",
            src.rating_col: "rating",
            src.timestamp_col: "timestamp",
            src.event_col: "event_type",
            src.session_col: "session_id",
            src.price_col: "price",
            src.quantity_col: "quantity",
        }
    elif table == ITEMS:
        pairs = {src.item_col: "item_id"}
    elif table == USERS:
        pairs = {src.user_col: "user_id"}
    else:
        pairs = {src.user_col: "user_id", src.item_col: "item_id"}
    return {s: c for s, c in pairs.items() if s != c}


def _drop_problems(
    frame: pd.DataFrame, raw: pd.DataFrame, problems: list[tuple[np.ndarray, str, str]]
) -> tuple[pd.DataFrame, list[Reject]]:
    """``frame`` without the rows flagged in ``problems`` ((bad mask, reason, column)), and those rows as
    rejects: the first reason, the offending values as detail and the row of ``raw`` as original."""
    bad_any = np.zeros(len(frame), dtype=bool)
    reasons: dict[int, list[tuple[str, str]]] = {}
    for bad, reason, column in problems:
        if bad is None or not bad.any():
            continue
        bad_any |= bad
        for pos in np.flatnonzero(bad):
            reasons.setdefault(int(pos), []).append((reason, column))
    rejects = [
        Reject(
            source_file=str(frame["source_file"].iloc[pos]),
            source_row=int(frame["source_row"].iloc[pos]),
            reason=found[0][0],
            original=json.dumps(raw.iloc[pos].to_dict(), default=str, ensure_ascii=False),
            detail="; ".join(f"{c}: {_short(raw[c].iloc[pos])}" for _, c in found),
        )
        for pos, found in sorted(reasons.items())
    ]
    if reasons:
        frame = frame[~bad_any]
    return frame.reset_index(drop=True), rejects


# ---------------------------------------------------------------- feedback events

FEEDBACK_EVENT_TYPES = {"click": "click", "cart": "cart", "purchase": "purchase"}  # feedback -> canonical


class FeedbackChunk(RawChunk):
    """Feedback events (the event store's columns, serving/events.py), typed by ``_Writer.feedback_typed``."""


@dataclass
class Feedback:
    """The event store's click, cart and purchase events, oldest first."""

    label: str  # source_file of their rows: "feedback:<events db>"
    events: pd.DataFrame  # EventStore.frame() columns
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="int64"))  # 1-based store position

    def chunks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[FeedbackChunk]:
        for start in range(0, len(self.events), chunk_rows):
            part = self.events.iloc[start : start + chunk_rows].reset_index(drop=True)
            yield FeedbackChunk(self.label, part, self.rows[start : start + chunk_rows])


def load_feedback(cfg: RunConfig) -> Feedback | None:
    """The feedback events to append, or None when there is no events store (no SQLite file yet)."""
    from serving.events import EventStoreError, open_event_store

    if not cfg.events_url and not cfg.paths.events_db.exists():
        return None
    try:
        store = open_event_store(cfg)
    except EventStoreError as exc:
        raise IngestError(str(exc)) from exc
    try:
        events = store.frame()
    finally:
        store.close()
    keep = events["event_type"].isin(list(FEEDBACK_EVENT_TYPES)).to_numpy()
    rows = np.flatnonzero(keep).astype("int64") + 1
    return Feedback(feedback_label(cfg), events[keep].reset_index(drop=True), rows)


def feedback_label(cfg: RunConfig) -> str:
    """``feedback:<SQLite file>`` or ``feedback:postgresql://host/db`` (never a password)."""
    if not cfg.events_url:
        return f"feedback:{cfg.paths.events_db}"
    scheme, _, rest = cfg.events_url.partition("://")
    return f"feedback:{scheme}://{rest.split('@')[-1].split('?')[0]}"


# ---------------------------------------------------------------- typing values


def _typed_column(values: pd.Series, kind: str, column: str) -> tuple[pd.Series, np.ndarray | None, str]:
    """(typed values, mask of values that could not be typed, reason) for one column."""
    if kind == ID:
        ids = _ids(values)
        if column == "event_type":
            ids = ids.str.lower().where(ids.notna(), None)
        return ids, _too_long(ids, MAX_ID_CHARS), f"{column} too long"
    if kind == TEXT:
        text = values.astype(object).where(values.notna(), None)
        text = text.map(str, na_action="ignore") if text.map(type, na_action="ignore").ne(str).any() else text
        return text, _too_long(text, MAX_TEXT_CHARS), f"{column} too long"
    if kind == TIMESTAMP:
        parsed, bad = parse_timestamps(values)
        return parsed, bad, f"{column} not a timestamp"
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = (parsed.isna() & values.notna()).to_numpy()
    if kind == INTEGER:
        whole = parsed.where(parsed.isna() | (parsed == parsed.round()))
        bad |= (whole.isna() & parsed.notna()).to_numpy()
        return whole.astype("Int64"), bad, f"{column} not a whole number"
    return parsed, bad, f"{column} not a number"


def _ids(values: pd.Series) -> pd.Series:
    """Ids as stripped strings ("12.0" from a float column becomes "12"); empty -> None. Vectorised in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pd.api.types.is_float_dtype(values):
        whole = values.where(values.isna() | (values == values.round()))
        if whole.notna().sum() == values.notna().sum():
            values = whole.astype("Int64")
    array = pa.array(values, from_pandas=True) if values.dtype == object else pa.Array.from_pandas(values)
    if not pa.types.is_string(array.type):
        array = array.cast(pa.string()) if not pa.types.is_large_string(array.type) else array
    array = pc.utf8_trim_whitespace(array)
    array = pc.if_else(pc.equal(array, ""), pa.scalar(None, array.type), array)
    return pd.Series(array.to_pandas(), index=values.index, dtype=object)


def _too_long(values: pd.Series, limit: int) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = pc.utf8_length(pa.array(values, type=pa.string(), from_pandas=True))
    return pc.fill_null(pc.greater(lengths, limit), False).to_numpy(zero_copy_only=False)


def parse_timestamps(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Unix seconds or milliseconds, ISO 8601 with or without offsets, and other common date formats, value by
    value -> UTC. Naive times are read as UTC. Returns (timestamps, mask of values that did not parse)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
        return parsed.astype("datetime64[ns, UTC]"), np.zeros(len(values), dtype=bool)
    numeric = pd.to_numeric(values, errors="coerce")
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    is_number = numeric.notna() & np.isfinite(numeric)
    if is_number.any():
        number = numeric[is_number]
        millis = number.abs() > 1e11
        for mask, unit in ((~millis, "s"), (millis, "ms")):
            if mask.any():
                parsed[number.index[mask]] = pd.to_datetime(
                    number[mask], unit=unit, utc=True, errors="coerce"
                )
    text = (~is_number & values.notna()).to_numpy()
    if text.any():
        strings = values[text].astype(str).str.strip()
        iso = pd.to_datetime(strings, format="ISO8601", utc=True, errors="coerce")
        rest = iso.isna()
        if rest.any():  # slower, value by value: "03/01/2024 10:00", "1 Mar 2024", ...
            iso[rest] = pd.to_datetime(strings[rest], format="mixed", utc=True, errors="coerce")
        parsed[values.index[text]] = iso
    bad = (parsed.isna() & values.notna()).to_numpy()
    return parsed, bad


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_terminal() -> bool:
    import sys

    return sys.stderr.isatty()


# ---------------------------------------------------------------- rejects


def write_rejects(path: Path, rejects: list[Reject], stage: str = "ingest") -> None:
    """Rejected rows in the quarantine layout (``QUARANTINE_COLUMNS``); an empty file when there are none."""
    frame = pd.DataFrame(
        {
            "source_file": pd.Series([r.source_file for r in rejects], dtype=object),
            "source_row": pd.Series([r.source_row for r in rejects], dtype="int64"),
            "stage": pd.Series([stage] * len(rejects), dtype=object),
            "reason": pd.Series([r.reason for r in rejects], dtype=object),
            "detail": pd.Series([r.detail for r in rejects], dtype=object),
            "original": pd.Series([r.original for r in rejects], dtype=object),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
