"""The serving store spread over N Redis shards (``FUSIONREC_SERVING_SHARDS``), same contract as one Redis.

Layout (keys under the same ``<prefix>`` as ``RedisServingStore``, see docs/scale-out/serving.md):

- every shard holds, per version, ``:v:<version>:recs`` (its share of the users' lists) and
  ``:v:<version>:info`` with the version's ``fallback`` (so an unknown user costs one read on one shard, too);
- shard 0 is also the *coordinator*: the live/previous pointer, the versions, each version's full info (meta,
  context, n_users and the ids of the shards it was written to) and the settings. Metadata operations and the
  pointer swap are the single-Redis store's own code and scripts, so the pointer logic exists once.

A user's shard is chosen by rendezvous (highest-random-weight) hashing over the shard ids (``host:port/db``):
adding a shard moves only the users that now score highest on it (~1/N), removing one moves only its users,
and shards are named rather than numbered, so any one can go. Each version records the shard ids it was written
to, so a version stays readable (and rollback works) after the shard list changes, until it is pruned.

Promotion: the new version's lists are written to every shard (pipelined, in chunks, the shards in parallel),
then the coordinator registers the version and flips the pointer in one Lua call; pruned versions are then
deleted on every shard. A read is one Lua call on the user's shard for ``(version, user)``, the version taken
from a pointer cached for ``pointer_ttl`` seconds; an answer therefore always comes from one version. After a
promotion other processes keep serving the previous (still kept) version for at most ``pointer_ttl``; a version
pruned under a cached pointer is noticed (the shard no longer has it) and the pointer re-read at once. While
the coordinator is down, readers keep the last pointer they saw: only the coordinator's own users lose answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from serving.store import (
    _READ_LUA,
    _SWAP_LUA,
    DEFAULT_KEEP,
    Answer,
    Candidates,
    NoLiveVersionError,
    RankedList,
    RedisServingStore,
    ServingStoreError,
    StoreUnavailableError,
    _check_k,
    _check_publish_args,
    _decode_answer,
    _encode_list,
    _encode_meta,
    _now,
)

log = logging.getLogger(__name__)

SHARDS_ENV = "FUSIONREC_SERVING_SHARDS"
POINTER_TTL = (
    1.0  # seconds a reader trusts its cached live pointer (bounds how long a promotion takes to show)
)
PIPELINE_CHUNKS = 10  # HSET chunks sent per round trip in a publish (bounds the client's buffer)
LAYOUTS_KEPT = 64  # versions whose shard list a reader remembers (versions are immutable, so are their lists)

# The live version and the shard ids it was written to, in one round trip to the coordinator.
_POINTER_LUA = """
local p = ARGV[1]
local live = redis.call('HGET', p .. ':pointer', 'live')
if not live then return false end
return {live, redis.call('HGET', p .. ':v:' .. live .. ':info', 'shards')}
"""


def parse_shard_urls(raw: str) -> list[str]:
    """The comma-separated Redis URLs of ``FUSIONREC_SERVING_SHARDS``; raises ``ServingStoreError`` on a bad list."""
    urls = [u.strip() for u in raw.split(",") if u.strip()]
    if not urls:
        raise ServingStoreError(f"{SHARDS_ENV} is set but names no Redis URL")
    for url in urls:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ServingStoreError(f"{SHARDS_ENV}: {url.split('@')[-1]!r} is not a redis:// URL")
    return urls


def shard_of(user_id: str, shard_ids: Sequence[str]) -> int:
    """Index in ``shard_ids`` of the shard that holds ``user_id``: the id with the highest hash of (id, user)."""
    return _Placement(shard_ids).shard_of(user_id)


class _Placement:
    """Rendezvous hashing with the per-shard half of each hash precomputed (one blake2b copy per shard)."""

    def __init__(self, shard_ids: Sequence[str]) -> None:
        self._seeds = [hashlib.blake2b(s.encode() + b"\x00", digest_size=8) for s in shard_ids]

    def shard_of(self, user_id: str) -> int:
        key = user_id.encode()
        best, best_weight = 0, b""
        for n, seed in enumerate(self._seeds):
            h = seed.copy()
            h.update(key)
            weight = h.digest()  # equal-length big-endian bytes compare like the integers they encode
            if weight > best_weight:
                best, best_weight = n, weight
        return best


@dataclass
class _Shard:
    id: str  # host:port/db (never the password): names the shard in placement and in each version's info
    client: Any  # redis.Redis
    read: Any  # the registered read script


@dataclass
class _Pointer:
    version: str
    shard_ids: tuple[str, ...]
    read_at: float


@contextmanager
def _shard_errors(shard: _Shard) -> Iterator[None]:
    """redis-py errors on one shard as StoreUnavailableError (network) / ServingStoreError (anything else)."""
    import redis

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailableError(f"Redis serving shard {shard.id} is unreachable: {exc}") from exc
    except redis.RedisError as exc:
        raise ServingStoreError(f"Redis serving shard {shard.id}: {exc}") from exc


def _shard_id(client: Any) -> str:
    kwargs = client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    return f"{where}/{kwargs.get('db', 0)}"


class ShardedRedisServingStore:
    """``ServingStore`` over several Redis shards; shard 0 coordinates (see the module docstring)."""

    kind = "redis-sharded"

    def __init__(
        self,
        urls: Sequence[str],
        prefix: str,
        keep: int = DEFAULT_KEEP,
        timeout: float = 10.0,
        pointer_ttl: float = POINTER_TTL,
    ) -> None:
        import redis

        if not urls:
            raise ServingStoreError("a sharded serving store needs at least one Redis URL")
        self.prefix = prefix
        self.keep = keep
        self.pointer_ttl = pointer_ttl
        self._coordinator = RedisServingStore(urls[0], prefix=prefix, keep=keep, timeout=timeout)
        self._shards: list[_Shard] = []
        for url in urls:
            client = redis.Redis.from_url(
                url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            self._shards.append(_Shard(_shard_id(client), client, client.register_script(_READ_LUA)))
        self.shard_ids = tuple(s.id for s in self._shards)
        if len(set(self.shard_ids)) < len(self.shard_ids):
            raise ServingStoreError(f"{SHARDS_ENV} names a shard twice: {', '.join(self.shard_ids)}")
        self._by_id = {s.id: s for s in self._shards}
        self._placements: dict[tuple[str, ...], _Placement] = {}
        self._pointer_script = self._shards[0].client.register_script(_POINTER_LUA)
        self._swap_script = self._shards[0].client.register_script(_SWAP_LUA)  # the single store's flip
        self._pointer: _Pointer | None = None
        self._pointer_epoch = 0  # bumped by every local pointer change: a slower refresh must not undo it
        self._layouts: dict[str, tuple[str, ...]] = {}
        self._pruning_key = f"{prefix}:pruning"  # versions pruned while a shard was down
        self._lock = threading.Lock()

    # ---- placement ---------------------------------------------------------------------------------

    def _placement(self, shard_ids: tuple[str, ...]) -> _Placement:
        placement = self._placements.get(shard_ids)
        if placement is None:
            placement = self._placements[shard_ids] = _Placement(shard_ids)
        return placement

    def shard_for(self, user_id: str) -> str:
        """The id of the shard that holds ``user_id``'s list in versions published now."""
        return self._shard_for(user_id, self.shard_ids).id

    def _shard_for(self, user_id: str, shard_ids: tuple[str, ...]) -> _Shard:
        """The shard holding ``user_id`` in a version written to ``shard_ids``."""
        shard_id = shard_ids[self._placement(shard_ids).shard_of(user_id)]
        shard = self._by_id.get(shard_id)
        if shard is None:
            raise ServingStoreError(
                f"shard {shard_id} holds part of this version but is not in {SHARDS_ENV}; "
                "put it back or promote a new version"
            )
        return shard

    def _check_layout(self, version: str) -> None:
        missing = [s for s in self._layout(version) if s not in self._by_id]
        if missing:
            raise ServingStoreError(
                f"version {version!r} was written to shards not in {SHARDS_ENV} now ({', '.join(missing)})"
            )

    def _layout(self, version: str) -> tuple[str, ...]:
        """The shard ids ``version`` was written to (one coordinator read per version, then remembered)."""
        layout = self._layouts.get(version)
        if layout is None:
            raw = self._coordinator_call(
                lambda c: c.hmget(f"{self.prefix}:v:{version}:info", "created_at", "shards")
            )
            if raw[0] is None:
                raise ServingStoreError(f"unknown version {version!r}")
            layout = self._remember_layout(version, raw[1])
        return layout

    def _remember_layout(self, version: str, raw: str | None) -> tuple[str, ...]:
        # A version written by the single-Redis store has no shard list: all of it is on the coordinator.
        layout = tuple(json.loads(raw)) if raw else self.shard_ids[:1]
        with self._lock:
            if len(self._layouts) >= LAYOUTS_KEPT:
                self._layouts.clear()
            self._layouts[version] = layout
        return layout

    def _coordinator_call(self, fn: Callable[[Any], Any]) -> Any:
        with _shard_errors(self._shards[0]):
            return fn(self._shards[0].client)

    # ---- the live pointer, cached --------------------------------------------------------------------

    def _live(self, refresh: bool = False) -> tuple[str, tuple[str, ...]]:
        cached = self._pointer
        if cached and not refresh and time.monotonic() - cached.read_at < self.pointer_ttl:
            return cached.version, cached.shard_ids
        epoch = self._pointer_epoch
        try:
            found = self._coordinator_call(lambda _: self._pointer_script(args=[self.prefix]))
        except StoreUnavailableError:
            if cached is None:
                raise
            # The coordinator is down: the last pointer still names a whole version, so the other shards'
            # users keep their answers; ask again in pointer_ttl, not on every request.
            with self._lock:
                if self._pointer_epoch == epoch:
                    self._pointer = _Pointer(cached.version, cached.shard_ids, time.monotonic())
            return cached.version, cached.shard_ids
        if not found:
            raise NoLiveVersionError("no model version has been promoted to the serving store yet")
        version, layout = found[0], self._remember_layout(found[0], found[1])
        with self._lock:
            if self._pointer_epoch == epoch:
                self._pointer = _Pointer(version, layout, time.monotonic())
        return version, layout

    def _set_pointer(self, pointer: _Pointer | None) -> None:
        with self._lock:
            self._pointer = pointer
            self._pointer_epoch += 1

    # ---- reads ---------------------------------------------------------------------------------------

    def _read(self, user_id: str, version: str, layout: tuple[str, ...]) -> Candidates | None:
        """The user's list (or the fallback) of ``version`` from the user's shard; None if the shard lacks it."""
        shard = self._shard_for(user_id, layout)
        with _shard_errors(shard):
            _, payload, cold = shard.read(args=[self.prefix, user_id, version])
        return None if payload is None else Candidates(version, payload, cold_start=bool(cold))

    def candidates(self, user_id: str, version: str | None = None) -> Candidates:
        """The stored list of ``user_id`` in ``version`` (default: live), or the version's fallback."""
        if version is not None:
            found = self._read(user_id, version, self._layout(version))
        else:
            live, layout = self._live()
            found = self._read(user_id, live, layout)
            if found is None:  # pruned under a cached pointer: the pointer has moved on since
                live, layout = self._live(refresh=True)
                found = self._read(user_id, live, layout)
            version = live
        if found is None:
            raise ServingStoreError(f"unknown version {version!r}")
        return found

    def recommend(self, user_id: str, k: int) -> Answer:
        """Top-``k`` of the live version for ``user_id``; unknown users get the fallback (``cold_start``)."""
        _check_k(k)
        found = self.candidates(user_id)
        return _decode_answer(user_id, found.version, found.payload, k, cold_start=found.cold_start)

    # ---- promotion -----------------------------------------------------------------------------------

    def publish(
        self,
        version: str,
        recs: Mapping[str, RankedList],
        fallback: RankedList,
        meta: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
        chunk: int = 1000,
    ) -> None:
        """Write the version's lists to every shard, then register it and flip the pointer on the coordinator
        in one Lua call; prune old versions on every shard. Nothing is live until the flip."""
        _check_publish_args(version, fallback)
        if self._coordinator_call(lambda c: c.zscore(f"{self.prefix}:versions", version)) is not None:
            raise ServingStoreError(f"version {version!r} is already published; versions are immutable")
        self._coordinator_call(lambda c: c.srem(self._pruning_key, version))  # a name may come back
        placement = self._placement(self.shard_ids)
        rows: list[dict[str, str]] = [{} for _ in self._shards]
        for user, items in recs.items():
            if len(items):
                rows[placement.shard_of(str(user))][str(user)] = _encode_list(items)
        encoded_fallback = _encode_list(fallback)
        try:
            self._on_every_shard(lambda s, n: self._write_share(s, version, rows[n], encoded_fallback, chunk))
            info = {
                "created_at": _now(),
                "meta": _encode_meta(meta),
                "context": _encode_meta(context or {}),
                "n_users": sum(len(r) for r in rows),
                "shards": json.dumps(self.shard_ids),
            }
            self._coordinator_call(lambda c: c.hset(f"{self.prefix}:v:{version}:info", mapping=info))
        except ServingStoreError:
            self._drop_versions([version], best_effort=True)  # nothing points at it: no half version stays
            raise
        # Register + flip + prune on the coordinator: the single-Redis store's own swap script.
        pruned = self._coordinator_call(lambda _: self._swap_script(args=[self.prefix, version, self.keep]))
        self._set_pointer(_Pointer(version, self.shard_ids, time.monotonic()))
        self._prune_shards(pruned)

    def _write_share(
        self, shard: _Shard, version: str, rows: dict[str, str], fallback: str, chunk: int
    ) -> None:
        """One shard's part of a version: its users' lists (HSET per ``chunk`` users) and the fallback."""
        recs_key, info_key = f"{self.prefix}:v:{version}:recs", f"{self.prefix}:v:{version}:info"
        pipe = shard.client.pipeline(transaction=False)
        pipe.unlink(recs_key, info_key)  # leftovers of a publish that died before its flip
        names = list(rows)
        for n, start in enumerate(range(0, len(names), chunk)):
            pipe.hset(recs_key, mapping={u: rows[u] for u in names[start : start + chunk]})
            if n % PIPELINE_CHUNKS == PIPELINE_CHUNKS - 1:  # bounds the client's send buffer
                pipe.execute()
        pipe.hset(info_key, "fallback", fallback)
        pipe.execute()

    def _prune_shards(self, pruned: Sequence[str]) -> None:
        """Delete pruned versions on every shard. A shard that is down keeps its share until a later
        publish retries (names wait in ``:pruning`` on the coordinator); the promotion itself has succeeded."""
        waiting = self._coordinator_call(lambda c: c.smembers(self._pruning_key))
        kept = set(self._coordinator_call(lambda c: c.zrange(f"{self.prefix}:versions", 0, -1)))
        names = sorted((set(pruned) | waiting) - kept)
        if not names:
            return
        try:
            self._drop_versions(names)
        except StoreUnavailableError as exc:
            self._coordinator_call(lambda c: c.sadd(self._pruning_key, *names))
            log.warning("pruned versions stay on an unreachable shard until the next publish: %s", exc)
            return
        if waiting:
            self._coordinator_call(lambda c: c.srem(self._pruning_key, *waiting))

    def _drop_versions(self, versions: Sequence[str], best_effort: bool = False) -> None:
        if not versions:
            return
        keys = [f"{self.prefix}:v:{v}:{part}" for v in versions for part in ("recs", "info")]
        try:
            self._on_every_shard(lambda s, _: s.client.unlink(*keys))
        except ServingStoreError:
            if not best_effort:
                raise

    def _on_every_shard(self, fn: Callable[[_Shard, int], object]) -> None:
        """``fn(shard, index)`` on all shards at once (one thread each); the first error is raised."""

        def run(n: int) -> None:
            with _shard_errors(self._shards[n]):
                fn(self._shards[n], n)

        with ThreadPoolExecutor(max_workers=len(self._shards)) as pool:
            for future in [pool.submit(run, n) for n in range(len(self._shards))]:
                future.result()

    def rollback(self) -> str:
        """Make the previous version live; the next older kept version becomes previous. Returns the new live."""
        previous = self._coordinator.previous_version()
        if previous is not None:
            self._check_layout(previous)
        live = self._coordinator.rollback()
        self._set_pointer(None)
        return live

    def activate(self, version: str) -> None:
        """Make a kept ``version`` live (the current live becomes previous), atomically."""
        self._check_layout(version)
        self._coordinator.activate(version)
        self._set_pointer(None)

    # ---- metadata and settings: the coordinator's -------------------------------------------------------

    def live_version(self) -> str | None:
        return self._coordinator.live_version()

    def previous_version(self) -> str | None:
        return self._coordinator.previous_version()

    def versions(self) -> list[dict[str, Any]]:
        """Kept versions, newest first: version, created_at, meta, n_users, live and previous flags."""
        return self._coordinator.versions()

    def meta(self, version: str | None = None) -> dict[str, Any]:
        return self._coordinator.meta(version)

    def context(self, version: str) -> dict[str, Any]:
        return self._coordinator.context(version)

    def get_setting(self, name: str) -> str | None:
        return self._coordinator.get_setting(name)

    def put_setting(self, name: str, value: str) -> None:
        self._coordinator.put_setting(name, value)

    def drop_all(self) -> int:
        """Delete every key under this store's prefix on every shard (tests, decommissioning). Returns how many."""
        dropped = [0] * len(self._shards)

        def drop(shard: _Shard, n: int) -> None:
            keys = list(shard.client.scan_iter(match=self.prefix + ":*", count=1000))
            for start in range(0, len(keys), 1000):
                dropped[n] += shard.client.unlink(*keys[start : start + 1000])

        self._on_every_shard(drop)
        return sum(dropped)

    def close(self) -> None:
        self._coordinator.close()
        for shard in self._shards:
            shard.client.close()
