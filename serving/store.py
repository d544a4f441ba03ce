"""Versioned store of precomputed recommendations, read by the API and written by the promote stage.

A *version* is immutable: every user's ranked list, a popularity fallback for unknown users and a meta dict.
``publish`` writes a version fully and only then moves the *live* pointer to it in one atomic step, keeping
the old live version as *previous* so ``rollback`` is a pointer swap. Readers resolve the pointer and read the
list in one consistent step, so an answer never mixes two versions.

Two backends share the contract: embedded SQLite (default, one file in ``cfg.paths.serving_db``) and Redis
(``cfg.redis_url``, keys namespaced under a prefix).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from fusionrec.config import RunConfig
from serving.sqlite_conns import ThreadConnections

DEFAULT_KEEP = 3
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,199}$")

# (item, score) or (item, score, anchor): the anchor is the user's history item that explains the pick.
RankedList = Sequence[tuple[str, float] | tuple[str, float, str | None]]


@dataclass
class Recommendation:
    item_id: str
    score: float


@dataclass
class Answer:
    """What one user gets: ranked items, the version that produced them, and whether it was the fallback."""

    user_id: str
    items: list[Recommendation]
    model_version: str
    cold_start: bool


@dataclass
class Candidates:
    """One user's stored list, still encoded: the API decodes and re-ranks it (see ``decode_list``)."""

    version: str
    payload: str  # JSON [[item, score(, anchor)], ...]
    cold_start: bool


class ServingStoreError(RuntimeError):
    """A serving-store operation that cannot be done (unknown version, nothing to roll back to, ...)."""


class NoLiveVersionError(ServingStoreError):
    """No version has been promoted yet, so there is nothing to serve."""


class StoreUnavailableError(ServingStoreError):
    """The backend cannot be reached (e.g. Redis down)."""


class ServingStore(Protocol):
    """The contract both backends honour (see the module docstring for the guarantees)."""

    kind: str

    def publish(
        self,
        version: str,
        recs: Mapping[str, RankedList],
        fallback: RankedList,
        meta: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
    ) -> None: ...

    def live_version(self) -> str | None: ...

    def previous_version(self) -> str | None: ...

    def versions(self) -> list[dict[str, Any]]: ...

    def rollback(self) -> str: ...

    def activate(self, version: str) -> None: ...

    def recommend(self, user_id: str, k: int) -> Answer: ...

    def meta(self, version: str | None = None) -> dict[str, Any]: ...

    def candidates(self, user_id: str, version: str | None = None) -> Candidates: ...

    def context(self, version: str) -> dict[str, Any]: ...

    def get_setting(self, name: str) -> str | None: ...

    def put_setting(self, name: str, value: str) -> None: ...

    def close(self) -> None: ...


def open_store(
    cfg: RunConfig, *, keep: int = DEFAULT_KEEP, redis_prefix: str | None = None, timeout: float = 10.0
) -> ServingStore:
    """Open the backend named by ``cfg.serving_store``: ``"sqlite"`` (``cfg.paths.serving_db``) or ``"redis"``
    (``cfg.redis_url``, or the shards listed in ``FUSIONREC_SERVING_SHARDS``: serving/sharded_store.py).

    ``redis_prefix`` namespaces the Redis keys; by default it is derived from ``cfg.home`` so two homes (e.g.
    parallel test runs) never share keys. ``timeout`` bounds each Redis call (the API uses a short one so it
    can fall back quickly when Redis is down).
    """
    if cfg.serving_store == "sqlite":
        return SQLiteServingStore(cfg.paths.serving_db, keep=keep)
    if cfg.serving_store == "redis":
        prefix = redis_prefix or default_redis_prefix(cfg)
        if shards := (cfg.serving_shards or "").strip():
            from serving.sharded_store import ShardedRedisServingStore, parse_shard_urls

            urls = parse_shard_urls(shards)
            return ShardedRedisServingStore(urls, prefix=prefix, keep=keep, timeout=timeout)
        return RedisServingStore(cfg.redis_url, prefix=prefix, keep=keep, timeout=timeout)
    raise ServingStoreError(f"unknown serving_store {cfg.serving_store!r}; expected 'sqlite' or 'redis'")


def default_redis_prefix(cfg: RunConfig) -> str:
    """``fusionrec:<12 hex of sha1(home)>``: stable for one home, distinct across homes."""
    return "fusionrec:" + hashlib.sha1(str(cfg.home).encode()).hexdigest()[:12]


# --- encoding shared by both backends ---------------------------------------------------------------


def _encode_list(items: RankedList) -> str:
    """Compact JSON ``[["item", score(, anchor)], ...]``; numpy scalars become plain Python values."""
    return json.dumps(
        [[str(e[0]), float(e[1]), *([e[2]] if len(e) > 2 and e[2] is not None else [])] for e in items],
        separators=(",", ":"),
    )


def _decode_answer(user_id: str, version: str, payload: str, k: int, cold_start: bool) -> Answer:
    items = [Recommendation(item_id=e[0], score=e[1]) for e in json.loads(payload)[:k]]
    return Answer(user_id=user_id, items=items, model_version=version, cold_start=cold_start)


def _encode_meta(meta: Mapping[str, Any]) -> str:
    def default(value: Any) -> Any:
        return value.item() if hasattr(value, "item") else str(value)  # numpy scalars, paths, dates

    return json.dumps(dict(meta), default=default, sort_keys=True)


def _check_publish_args(version: str, fallback: RankedList) -> None:
    if not _VERSION_RE.match(version):
        raise ServingStoreError(
            f"invalid version name {version!r}: use 1-200 characters from letters, digits and ._:@+-"
        )
    if not fallback:
        raise ServingStoreError("fallback list is empty: unknown users would get no recommendations")


def _check_k(k: int) -> None:
    if k < 1:
        raise ServingStoreError(f"k must be >= 1, got {k}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --- SQLite -----------------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- creation order (timestamps can tie)
    version TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    meta TEXT NOT NULL,
    fallback TEXT NOT NULL,
    n_users INTEGER NOT NULL,
    context TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS recs (
    version TEXT NOT NULL,
    user_id TEXT NOT NULL,
    items TEXT NOT NULL,
    PRIMARY KEY (version, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pointer (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    live TEXT,
    previous TEXT
);
INSERT OR IGNORE INTO pointer (id, live, previous) VALUES (1, NULL, NULL);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SQLiteServingStore:
    """Embedded backend: one SQLite file in WAL mode, so readers never block on (or see half of) a publish.

    Connections are per thread (sqlite3 connections must not be shared across threads); every operation is
    one explicit transaction.
    """

    kind = "sqlite"

    def __init__(self, path: Path, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ServingStoreError(f"keep must be >= 1, got {keep}")
        self.path = Path(path)
        self.keep = keep
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conns = ThreadConnections(self.path)
        conn = self._conn()
        conn.executescript(_SQLITE_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(versions)")}
        if "context" not in columns:  # a store written before versions carried a context
            with contextlib.suppress(sqlite3.OperationalError):  # another opener added it first
                conn.execute("ALTER TABLE versions ADD COLUMN context TEXT NOT NULL DEFAULT '{}'")

    # connections and transactions

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every SELECT inside sees the same snapshot."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (IMMEDIATE), committed whole or rolled back."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _pointer(conn: sqlite3.Connection) -> tuple[str | None, str | None]:
        return conn.execute("SELECT live, previous FROM pointer WHERE id = 1").fetchone()

    # contract

    def publish(
        self,
        version: str,
        recs: Mapping[str, RankedList],
        fallback: RankedList,
        meta: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the version and move the pointer in one transaction; prune versions beyond ``keep``."""
        _check_publish_args(version, fallback)
        rows = [(version, str(u), _encode_list(items)) for u, items in recs.items() if len(items)]
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM versions WHERE version = ?", (version,)).fetchone():
                raise ServingStoreError(f"version {version!r} is already published; versions are immutable")
            conn.execute(
                "INSERT INTO versions (version, created_at, meta, fallback, n_users, context) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    version,
                    _now(),
                    _encode_meta(meta),
                    _encode_list(fallback),
                    len(rows),
                    _encode_meta(context or {}),
                ),
            )
            conn.executemany("INSERT INTO recs (version, user_id, items) VALUES (?, ?, ?)", rows)
            live, _ = self._pointer(conn)
            conn.execute("UPDATE pointer SET live = ?, previous = ? WHERE id = 1", (version, live))
            self._prune(conn, protect={version, live})

    def _prune(self, conn: sqlite3.Connection, protect: set[str | None]) -> None:
        names = [r[0] for r in conn.execute("SELECT version FROM versions ORDER BY seq DESC")]
        for name in names[self.keep :]:
            if name not in protect:
                conn.execute("DELETE FROM recs WHERE version = ?", (name,))
                conn.execute("DELETE FROM versions WHERE version = ?", (name,))

    def live_version(self) -> str | None:
        with self._read() as conn:
            return self._pointer(conn)[0]

    def previous_version(self) -> str | None:
        with self._read() as conn:
            return self._pointer(conn)[1]

    def versions(self) -> list[dict[str, Any]]:
        """Kept versions, newest first: version, created_at, meta, n_users, live and previous flags."""
        with self._read() as conn:
            live, previous = self._pointer(conn)
            rows = conn.execute(
                "SELECT version, created_at, meta, n_users FROM versions ORDER BY seq DESC"
            ).fetchall()
        return [
            {
                "version": v,
                "created_at": created,
                "meta": json.loads(meta),
                "n_users": n,
                "live": v == live,
                "previous": v == previous,
            }
            for v, created, meta, n in rows
        ]

    def rollback(self) -> str:
        """Make the previous version live; the next older kept version becomes previous. Returns the new live."""
        with self._write() as conn:
            live, previous = self._pointer(conn)
            if previous is None:
                raise ServingStoreError(
                    f"nothing to roll back to: live version is {live!r} and there is no previous"
                )
            older = conn.execute(
                "SELECT version FROM versions WHERE seq < (SELECT seq FROM versions WHERE version = ?) "
                "ORDER BY seq DESC LIMIT 1",
                (previous,),
            ).fetchone()
            conn.execute(
                "UPDATE pointer SET live = ?, previous = ? WHERE id = 1",
                (previous, older[0] if older else None),
            )
        return previous

    def recommend(self, user_id: str, k: int) -> Answer:
        """Top-``k`` of the live version for ``user_id``; unknown users get the fallback (``cold_start``)."""
        _check_k(k)
        with self._read() as conn:
            live, _ = self._pointer(conn)
            if live is None:
                raise NoLiveVersionError("no model version has been promoted to the serving store yet")
            row = conn.execute(
                "SELECT items FROM recs WHERE version = ? AND user_id = ?", (live, user_id)
            ).fetchone()
            if row is None:
                row = conn.execute("SELECT fallback FROM versions WHERE version = ?", (live,)).fetchone()
                return _decode_answer(user_id, live, row[0], k, cold_start=True)
        return _decode_answer(user_id, live, row[0], k, cold_start=False)

    def activate(self, version: str) -> None:
        """Make a kept ``version`` live (the current live becomes previous): a re-promotion without a write."""
        with self._write() as conn:
            if not conn.execute("SELECT 1 FROM versions WHERE version = ?", (version,)).fetchone():
                raise ServingStoreError(f"unknown version {version!r}")
            live, previous = self._pointer(conn)
            if version != live:
                conn.execute("UPDATE pointer SET live = ?, previous = ? WHERE id = 1", (version, live))

    def candidates(self, user_id: str, version: str | None = None) -> Candidates:
        """The stored list of ``user_id`` in ``version`` (default: live), or the version's fallback."""
        with self._read() as conn:
            version = version or self._pointer(conn)[0]
            if version is None:
                raise NoLiveVersionError("no model version has been promoted to the serving store yet")
            row = conn.execute(
                "SELECT items FROM recs WHERE version = ? AND user_id = ?", (version, user_id)
            ).fetchone()
            if row is not None:
                return Candidates(version, row[0], cold_start=False)
            row = conn.execute("SELECT fallback FROM versions WHERE version = ?", (version,)).fetchone()
        if row is None:
            raise ServingStoreError(f"unknown version {version!r}")
        return Candidates(version, row[0], cold_start=True)

    def context(self, version: str) -> dict[str, Any]:
        """The context (catalogue, popular per category, neighbours) published with ``version``."""
        with self._read() as conn:
            row = conn.execute("SELECT context FROM versions WHERE version = ?", (version,)).fetchone()
        if row is None:
            raise ServingStoreError(f"unknown version {version!r}")
        return json.loads(row[0])

    def get_setting(self, name: str) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def put_setting(self, name: str, value: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)", (name, value))

    def meta(self, version: str | None = None) -> dict[str, Any]:
        """The meta dict published with ``version`` (default: the live one)."""
        with self._read() as conn:
            version = version or self._pointer(conn)[0]
            if version is None:
                raise NoLiveVersionError("no model version has been promoted to the serving store yet")
            row = conn.execute("SELECT meta FROM versions WHERE version = ?", (version,)).fetchone()
        if row is None:
            raise ServingStoreError(f"unknown version {version!r}")
        return json.loads(row[0])

    def close(self) -> None:
        self._conns.close()


# --- Redis ------------------------------------------------------------------------------------------
# Keys under <prefix>: ":pointer" hash {live, previous}; ":versions" zset version -> creation seq;
# ":seq" counter; ":v:<version>:recs" hash user -> JSON list; ":v:<version>:info" hash created_at/meta/
# fallback/n_users. Keys are built inside the scripts from the prefix, which is fine on a single Redis
# node (not Redis Cluster).

# Pointer + list in one atomic script: a reader can never see a pointer whose version is mid-prune.
_READ_LUA = """
local p = ARGV[1]
local live = ARGV[3]
if live == '' then live = redis.call('HGET', p .. ':pointer', 'live') end
if not live then return false end
local items = redis.call('HGET', p .. ':v:' .. live .. ':recs', ARGV[2])
if items then return {live, items, 0} end
return {live, redis.call('HGET', p .. ':v:' .. live .. ':info', 'fallback'), 1}
"""

# Register the fully written version, swap the pointer and prune, all atomically. Returns pruned names.
_SWAP_LUA = """
local p, v, keep = ARGV[1], ARGV[2], tonumber(ARGV[3])
local zkey, pkey = p .. ':versions', p .. ':pointer'
if redis.call('ZSCORE', zkey, v) then
  return redis.error_reply('version ' .. v .. ' is already published; versions are immutable')
end
redis.call('ZADD', zkey, redis.call('INCR', p .. ':seq'), v)
local old = redis.call('HGET', pkey, 'live')
redis.call('HSET', pkey, 'live', v)
if old then redis.call('HSET', pkey, 'previous', old) else redis.call('HDEL', pkey, 'previous') end
local names = redis.call('ZRANGE', zkey, 0, -1)
local pruned = {}
for i = 1, #names - keep do
  local name = names[i]
  if name ~= v and name ~= old then
    redis.call('ZREM', zkey, name)
    redis.call('UNLINK', p .. ':v:' .. name .. ':recs', p .. ':v:' .. name .. ':info')
    table.insert(pruned, name)
  end
end
return pruned
"""

_ROLLBACK_LUA = """
local p = ARGV[1]
local zkey, pkey = p .. ':versions', p .. ':pointer'
local live = redis.call('HGET', pkey, 'live')
local prev = redis.call('HGET', pkey, 'previous')
if not prev then
  return redis.error_reply('nothing to roll back to: live version is ' .. tostring(live) .. ' and there is no previous')
end
local rank = redis.call('ZRANK', zkey, prev)
redis.call('HSET', pkey, 'live', prev)
if rank and rank > 0 then
  redis.call('HSET', pkey, 'previous', redis.call('ZRANGE', zkey, rank - 1, rank - 1)[1])
else
  redis.call('HDEL', pkey, 'previous')
end
return prev
"""


_ACTIVATE_LUA = """
local p, v = ARGV[1], ARGV[2]
local pkey = p .. ':pointer'
if not redis.call('ZSCORE', p .. ':versions', v) then
  return redis.error_reply('unknown version ' .. v)
end
local live = redis.call('HGET', pkey, 'live')
if live ~= v then
  redis.call('HSET', pkey, 'live', v)
  if live then redis.call('HSET', pkey, 'previous', live) end
end
return v
"""


F = TypeVar("F", bound=Callable[..., Any])


def _redis_errors(method: F) -> F:
    """Turn redis-py exceptions into ServingStoreError (Lua error replies) / StoreUnavailableError (network)."""

    @functools.wraps(method)
    def wrapper(self: RedisServingStore, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            where = f"{self.address[0]}:{self.address[1]}"  # never the URL: it may carry a password
            raise StoreUnavailableError(f"Redis serving store at {where} is unreachable: {exc}") from exc
        except redis.RedisError as exc:
            raise ServingStoreError(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


class RedisServingStore:
    """Redis backend: bulk writes are pipelined, pointer swap / rollback / reads are Lua scripts (atomic)."""

    kind = "redis"

    def __init__(self, url: str, prefix: str, keep: int = DEFAULT_KEEP, timeout: float = 10.0) -> None:
        import redis  # imported here so the SQLite path never needs the client

        if keep < 1:
            raise ServingStoreError(f"keep must be >= 1, got {keep}")
        self.prefix = prefix
        self.keep = keep
        parts = urlsplit(url)
        self.address = (parts.hostname or "localhost", parts.port or 6379)
        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._read_script = self._redis.register_script(_READ_LUA)
        self._swap_script = self._redis.register_script(_SWAP_LUA)
        self._rollback_script = self._redis.register_script(_ROLLBACK_LUA)
        self._activate_script = self._redis.register_script(_ACTIVATE_LUA)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _version_keys(self, version: str) -> tuple[str, str]:
        return self._key("v", version, "recs"), self._key("v", version, "info")

    @_redis_errors
    def publish(
        self,
        version: str,
        recs: Mapping[str, RankedList],
        fallback: RankedList,
        meta: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
        chunk: int = 1000,
    ) -> None:
        """Write the version's keys (pipelined), then register it and swap the pointer in one Lua call."""
        _check_publish_args(version, fallback)
        if self._redis.zscore(self._key("versions"), version) is not None:
            raise ServingStoreError(f"version {version!r} is already published; versions are immutable")
        recs_key, info_key = self._version_keys(version)
        rows = {str(u): _encode_list(items) for u, items in recs.items() if len(items)}
        pipe = self._redis.pipeline(transaction=False)
        pipe.unlink(recs_key, info_key)  # leftovers of a publish that died before its swap
        names = list(rows)
        for start in range(0, len(names), chunk):
            pipe.hset(recs_key, mapping={u: rows[u] for u in names[start : start + chunk]})
        info = {
            "created_at": _now(),
            "meta": _encode_meta(meta),
            "fallback": _encode_list(fallback),
            "context": _encode_meta(context or {}),
        }
        pipe.hset(info_key, mapping={**info, "n_users": len(rows)})
        pipe.execute()
        self._run(self._swap_script, version, self.keep)

    def _run(self, script: Any, *args: Any) -> Any:
        return script(args=[self.prefix, *args])

    @_redis_errors
    def live_version(self) -> str | None:
        return self._redis.hget(self._key("pointer"), "live")

    @_redis_errors
    def previous_version(self) -> str | None:
        return self._redis.hget(self._key("pointer"), "previous")

    @_redis_errors
    def versions(self) -> list[dict[str, Any]]:
        """Kept versions, newest first: version, created_at, meta, n_users, live and previous flags."""
        pipe = self._redis.pipeline(transaction=True)  # MULTI/EXEC: pointer and list from one moment
        pipe.hgetall(self._key("pointer"))
        pipe.zrevrange(self._key("versions"), 0, -1)
        pointer, names = pipe.execute()
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self._version_keys(name)[1], "created_at", "meta", "n_users")
        out = []
        for name, (created, meta, n_users) in zip(names, pipe.execute(), strict=True):
            if created is None:  # pruned between the two reads
                continue
            out.append(
                {
                    "version": name,
                    "created_at": created,
                    "meta": json.loads(meta),
                    "n_users": int(n_users),
                    "live": name == pointer.get("live"),
                    "previous": name == pointer.get("previous"),
                }
            )
        return out

    @_redis_errors
    def rollback(self) -> str:
        """Make the previous version live; the next older kept version becomes previous. Returns the new live."""
        return self._run(self._rollback_script)

    @_redis_errors
    def recommend(self, user_id: str, k: int) -> Answer:
        """Top-``k`` of the live version for ``user_id``; unknown users get the fallback (``cold_start``)."""
        _check_k(k)
        found = self.candidates(user_id)
        return _decode_answer(user_id, found.version, found.payload, k, cold_start=found.cold_start)

    @_redis_errors
    def activate(self, version: str) -> None:
        """Make a kept ``version`` live (the current live becomes previous), atomically."""
        self._run(self._activate_script, version)

    @_redis_errors
    def candidates(self, user_id: str, version: str | None = None) -> Candidates:
        """The stored list of ``user_id`` in ``version`` (default: live), or the version's fallback."""
        found = self._run(self._read_script, user_id, version or "")
        if not found:
            raise NoLiveVersionError("no model version has been promoted to the serving store yet")
        name, payload, cold = found
        if payload is None:
            raise ServingStoreError(f"unknown version {name!r}")
        return Candidates(name, payload, cold_start=bool(cold))

    @_redis_errors
    def context(self, version: str) -> dict[str, Any]:
        """The context (catalogue, popular per category, neighbours) published with ``version``."""
        raw = self._redis.hget(self._version_keys(version)[1], "context")
        if raw is None:
            raise ServingStoreError(f"unknown version {version!r}")
        return json.loads(raw)

    @_redis_errors
    def get_setting(self, name: str) -> str | None:
        return self._redis.hget(self._key("settings"), name)

    @_redis_errors
    def put_setting(self, name: str, value: str) -> None:
        self._redis.hset(self._key("settings"), name, value)

    @_redis_errors
    def meta(self, version: str | None = None) -> dict[str, Any]:
        """The meta dict published with ``version`` (default: the live one)."""
        version = version or self.live_version()
        if version is None:
            raise NoLiveVersionError("no model version has been promoted to the serving store yet")
        meta = self._redis.hget(self._version_keys(version)[1], "meta")
        if meta is None or self._redis.zscore(self._key("versions"), version) is None:
            raise ServingStoreError(f"unknown version {version!r}")
        return json.loads(meta)

    @_redis_errors
    def drop_all(self) -> int:
        """Delete every key under this store's prefix (tests, decommissioning). Returns how many."""
        keys = list(self._redis.scan_iter(match=self.prefix + ":*", count=1000))
        return self._redis.unlink(*keys) if keys else 0

    def close(self) -> None:
        self._redis.close()
