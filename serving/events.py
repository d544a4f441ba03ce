"""Feedback events from the shop (impressions, clicks, carts, purchases, dismissals), stored for reports,
monitoring and the next retrain.

Two backends share one table, ``feedback_events``: embedded SQLite (default, ``cfg.paths.events_db``) and
PostgreSQL (``cfg.events_url``, env ``FUSIONREC_EVENTS_URL``). Writes are idempotent on ``event_id``, so a
client may resend a batch after a timeout. User ids are the *stored* ids (pseudonymised like the training
data), never the raw ids the shop sends.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from fusionrec.config import RunConfig
from serving.sqlite_conns import ThreadConnections

FEEDBACK_TYPES = ("impression", "click", "cart", "purchase", "dismiss")
TABLE = "feedback_events"


class EventStoreError(RuntimeError):
    """The event store cannot be used (bad URL, unreachable database)."""


@dataclass(frozen=True)
class FeedbackEvent:
    event_type: str
    user_id: str  # stored (pseudonymised) id
    item_id: str
    timestamp: datetime  # tz-aware UTC
    arm: str | None = None
    model_version: str | None = None
    request_id: str | None = None
    position: int | None = None
    order_value: float | None = None
    quantity: int | None = None
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.event_type not in FEEDBACK_TYPES:
            raise ValueError(
                f"event_type must be one of {', '.join(FEEDBACK_TYPES)}, got {self.event_type!r}"
            )
        if self.timestamp.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware (UTC)")


COLUMNS = tuple(f.name for f in fields(FeedbackEvent))
_SQL_TYPES = {
    "timestamp": "DOUBLE PRECISION NOT NULL",  # seconds since the epoch, UTC: sortable and portable
    "position": "INTEGER",
    "order_value": "DOUBLE PRECISION",
    "quantity": "INTEGER",
    "event_id": "TEXT PRIMARY KEY",
    "event_type": "TEXT NOT NULL",
    "user_id": "TEXT NOT NULL",
    "item_id": "TEXT NOT NULL",
}
_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    + ", ".join(f"{c} {_SQL_TYPES.get(c, 'TEXT')}" for c in COLUMNS)
    + ")"
)
_INDEX = f"CREATE INDEX IF NOT EXISTS {TABLE}_ts ON {TABLE} (timestamp)"


def _row(event: FeedbackEvent) -> tuple[Any, ...]:
    values = dict(zip(COLUMNS, astuple(event), strict=True))
    values["timestamp"] = event.timestamp.timestamp()
    return tuple(values[c] for c in COLUMNS)


def _frame(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows), columns=list(COLUMNS))
    df["timestamp"] = pd.to_datetime(df["timestamp"].astype("float64"), unit="s", utc=True)
    for column in ("position", "quantity"):
        df[column] = df[column].astype("Int64")
    df["order_value"] = df["order_value"].astype("float64")
    return df


class EventStore(Protocol):
    kind: str

    def add(self, events: Sequence[FeedbackEvent]) -> int: ...

    def frame(self, since: datetime | None = None) -> pd.DataFrame: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


class SQLiteEventStore:
    """One SQLite file in WAL mode; a connection per thread (the API writes from its thread pool)."""

    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conns = ThreadConnections(self.path)
        conn = self._conn()
        conn.execute(_CREATE)
        conn.execute(_INDEX)

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    def add(self, events: Sequence[FeedbackEvent]) -> int:
        """Insert ``events`` in one transaction; returns how many were new (resent event ids are ignored)."""
        conn = self._conn()
        placeholders = ", ".join("?" for _ in COLUMNS)
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = conn.total_changes
            conn.executemany(
                f"INSERT OR IGNORE INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                [_row(e) for e in events],
            )
            added = conn.total_changes - before
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return added

    def frame(self, since: datetime | None = None) -> pd.DataFrame:
        query = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"
        args: tuple[Any, ...] = ()
        if since is not None:
            query, args = query + " WHERE timestamp >= ?", (since.timestamp(),)
        return _frame(self._conn().execute(query + " ORDER BY timestamp", args).fetchall())

    def count(self) -> int:
        return int(self._conn().execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0])

    def close(self) -> None:
        self._conns.close()


class PostgresEventStore:
    """PostgreSQL table; one connection guarded by a lock (writes are short batched inserts)."""

    kind = "postgres"

    def __init__(self, url: str) -> None:
        import psycopg2

        self.url = url
        try:
            self._conn = psycopg2.connect(url, connect_timeout=5)
        except psycopg2.OperationalError as exc:
            where = url.split("@")[-1]  # never print a password
            raise EventStoreError(f"event store PostgreSQL at {where} is unreachable: {exc}".strip()) from exc
        self._conn.autocommit = True
        self._lock = threading.Lock()
        with self._lock, self._conn.cursor() as cur:
            cur.execute(_CREATE)
            cur.execute(_INDEX)

    def add(self, events: Sequence[FeedbackEvent]) -> int:
        from psycopg2.extras import execute_values

        with self._lock, self._conn, self._conn.cursor() as cur:  # `with conn`: one transaction
            execute_values(
                cur,
                f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES %s ON CONFLICT (event_id) DO NOTHING",
                [_row(e) for e in events],
            )
            return cur.rowcount

    def frame(self, since: datetime | None = None) -> pd.DataFrame:
        query = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"
        args: tuple[Any, ...] = ()
        if since is not None:
            query, args = query + " WHERE timestamp >= %s", (since.timestamp(),)
        with self._lock, self._conn.cursor() as cur:
            cur.execute(query + " ORDER BY timestamp", args)
            return _frame(cur.fetchall())

    def count(self) -> int:
        with self._lock, self._conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {TABLE}")
            return int(cur.fetchone()[0])

    def close(self) -> None:
        self._conn.close()


def open_event_store(cfg: RunConfig) -> EventStore:
    """PostgreSQL when ``cfg.events_url`` is set, else the SQLite file in the FusionRec home."""
    if cfg.events_url:
        if not cfg.events_url.startswith(("postgresql://", "postgres://")):
            raise EventStoreError(
                f"events_url must be a postgresql:// URL, got {cfg.events_url.split('@')[-1]!r}"
            )
        return PostgresEventStore(cfg.events_url)
    return SQLiteEventStore(cfg.paths.events_db)


def now() -> datetime:
    return datetime.now(UTC)
