"""Streaming readers for source files: CSV/TSV or Parquet, one file or a folder, in bounded chunks.

A reader never fails on a bad row: a line that cannot be read (wrong field count, broken quoting, bytes that
are not UTF-8) becomes a ``Reject`` with its file, row number and original text, and reading goes on. Only
whole-file problems (missing, unreadable, empty, no header) raise ``SourceFileError``.

CSV rules: the first line is the header; a UTF-8 byte-order mark is skipped; each physical line is one row
(quoted fields may hold the separator but not a line break); blank lines are not rows; empty fields are
missing values. Row numbers are 1-based data rows (the header is row 0), as in the quarantine.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

CSV_SUFFIXES = {".csv", ".tsv", ".tab", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
CHUNK_ROWS = 1_000_000
_BLOCK_BYTES = 64 << 20


class SourceFileError(ValueError):
    """A whole file cannot be used; the message is one line naming the file and the problem."""


@dataclass
class Reject:
    """A row rejected before it reached the canonical tables."""

    source_file: str
    source_row: int
    reason: str
    original: str  # JSON object of the row's fields as read, or the raw line text
    detail: str = ""  # which column and value, when the reason alone does not say


@dataclass
class RawChunk:
    """Up to ``CHUNK_ROWS`` rows of one file: the readable rows as a frame and the rows that were not."""

    source_file: str
    frame: pd.DataFrame  # source columns; CSV values are str or None, Parquet keeps its types
    rows: np.ndarray  # int64, 1-based source row of each frame row
    rejects: list[Reject] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return len(self.frame) + len(self.rejects)


def source_files(path: Path) -> list[Path]:
    """``path`` itself, or the CSV/Parquet files under the folder ``path`` (sorted, recursive)."""
    if not path.exists():
        raise SourceFileError(f"{path}: file not found")
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CSV_SUFFIXES | PARQUET_SUFFIXES
    )
    if not files:
        raise SourceFileError(f"{path}: folder has no .csv, .tsv or .parquet files")
    return files


def iter_chunks(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[RawChunk]:
    """Chunks of every file under ``path`` in order (see ``source_files``)."""
    for file in source_files(path):
        if file.stat().st_size == 0:
            raise SourceFileError(f"{file}: file is empty")
        if file.suffix.lower() in PARQUET_SUFFIXES:
            yield from _parquet_chunks(file, chunk_rows)
        else:
            yield from _csv_chunks(file, chunk_rows)


def read_whole(path: Path) -> RawChunk:
    """All rows of a (small) table such as items or users, as one chunk."""
    chunks = list(iter_chunks(path, chunk_rows=1 << 62))
    frame = pd.concat([c.frame for c in chunks], ignore_index=True) if chunks else pd.DataFrame()
    rows = np.concatenate([c.rows for c in chunks]) if chunks else np.zeros(0, dtype="int64")
    file = chunks[0].source_file if len(chunks) == 1 else str(path)
    out = RawChunk(file, frame, rows, [r for c in chunks for r in c.rejects])
    if len(chunks) > 1:  # several files: remember each row's own file
        out.frame["_source_file"] = np.concatenate([[c.source_file] * len(c.frame) for c in chunks])
    return out


# ---------------------------------------------------------------- Parquet


def _parquet_chunks(file: Path, chunk_rows: int) -> Iterator[RawChunk]:
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(file)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise SourceFileError(f"{file}: cannot read Parquet file: {_first_line(exc)}") from exc
    if handle.metadata.num_rows == 0:
        raise SourceFileError(f"{file}: file is empty (no data rows)")
    start = 1
    for batch in handle.iter_batches(batch_size=min(chunk_rows, 1 << 31)):
        frame = batch.to_pandas()
        rows = np.arange(start, start + len(frame), dtype="int64")
        start += len(frame)
        yield RawChunk(str(file), frame, rows)


# ---------------------------------------------------------------- CSV


def _csv_chunks(file: Path, chunk_rows: int) -> Iterator[RawChunk]:
    separator = "\t" if file.suffix.lower() in {".tsv", ".tab"} else ","
    with file.open("rb") as handle:
        lines = _lines(handle)
        header_line = next(lines, None)
        if header_line is None:
            raise SourceFileError(f"{file}: file is empty")
        header = _header(file, header_line, separator)
        source = str(file)
        values: list[list[str]] = []
        rows: list[int] = []
        rejects: list[Reject] = []
        empty = True
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = _parse_line(line, separator, len(header))
            if isinstance(record, str):
                reason, _, detail = record.partition(": ")
                rejects.append(Reject(source, number, reason, _line_text(line), detail))
            else:
                values.append(record)
                rows.append(number)
            empty = False
            if len(values) + len(rejects) >= chunk_rows:
                yield _csv_chunk(source, header, values, rows, rejects)
                values, rows, rejects = [], [], []
        if empty:
            raise SourceFileError(f"{file}: file is empty (header only, no data rows)")
        if values or rejects:
            yield _csv_chunk(source, header, values, rows, rejects)


def _lines(handle) -> Iterator[bytes]:  # noqa: ANN001 - a binary file object
    """Physical lines without their line ending, read in large blocks (a byte-order mark is dropped)."""
    rest = b""
    first = True
    while block := handle.read(_BLOCK_BYTES):
        if first:
            block = block.removeprefix(b"\xef\xbb\xbf")
            first = False
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        for part in parts:
            yield part.removesuffix(b"\r")
    if rest:
        yield rest.removesuffix(b"\r")


def _header(file: Path, line: bytes, separator: str) -> list[str]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceFileError(f"{file}: header is not UTF-8 text (byte {exc.start})") from exc
    names = next(csv.reader([text], delimiter=separator))
    names = [n.strip() for n in names]
    if not any(names):
        raise SourceFileError(f"{file}: first line is not a header")
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise SourceFileError(f"{file}: header repeats column {duplicated[0]!r}")
    return names


def _parse_line(line: bytes, separator: str, width: int) -> list[str] | str:
    """The fields of one line, or the reason it cannot be read."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"non-UTF-8 bytes: at byte {exc.start}"
    if '"' not in text:  # the common case: no quoting, a plain split
        fields = text.split(separator)
        return (
            fields if len(fields) == width else f"wrong field count: {len(fields)} fields, header has {width}"
        )
    if text.count('"') % 2:
        return "broken quoting: unbalanced quote"
    try:
        fields = next(csv.reader([text], delimiter=separator, strict=True))
    except csv.Error as exc:
        return f"broken quoting: {exc}"
    if len(fields) != width:
        return f"wrong field count: {len(fields)} fields, header has {width}"
    return fields


def _csv_chunk(
    source: str, header: list[str], values: list[list[str]], rows: list[int], rejects: list[Reject]
) -> RawChunk:
    columns = list(zip(*values, strict=True)) if values else [()] * len(header)
    frame = pd.DataFrame(
        {
            name: pd.Series(col, dtype=object).replace("", None)
            for name, col in zip(header, columns, strict=True)
        }
    )
    return RawChunk(source, frame, np.asarray(rows, dtype="int64"), rejects)


def _line_text(line: bytes) -> str:
    return json.dumps({"line": line.decode("utf-8", errors="backslashreplace")})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
