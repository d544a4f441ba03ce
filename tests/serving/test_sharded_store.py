"""The sharded serving store against a real Redis: databases 11-14 of 127.0.0.1:6379 stand in for four shards
(flushed before and after this module; skipped when Redis is not reachable). The serving-store contract tests
of test_store.py run on it too."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from fusionrec.config import RunConfig
from pipelines.privacy import stored_user_id
from serving.app import create_app
from serving.sharded_store import SHARDS_ENV, ShardedRedisServingStore, shard_of
from serving.state import BREAKER_SECONDS
from serving.store import (
    RedisServingStore,
    ServingStoreError,
    SQLiteServingStore,
    StoreUnavailableError,
    default_redis_prefix,
    open_store,
)
from tests.conftest import REDIS_HOST, REDIS_PORT, reachable
from tests.serving import test_store as contract
from tests.serving.conftest import TcpProxy, publish
from tests.serving.test_store import assert_one_version, publish_version, version_recs

pytestmark = pytest.mark.services

DBS = (11, 12, 13, 14)
Factory = Callable[..., ShardedRedisServingStore]


def _flush(urls: list[str]) -> None:
    for url in urls:
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


@pytest.fixture(scope="module")
def shard_urls() -> Iterator[list[str]]:
    if not reachable(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}")
    urls = [f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}" for db in DBS]
    _flush(urls)
    yield urls
    _flush(urls)


@pytest.fixture
def raw(shard_urls: list[str]) -> Iterator[list[redis.Redis]]:
    """A plain client per shard, to look at what each one holds."""
    clients = [redis.Redis.from_url(url, decode_responses=True) for url in shard_urls]
    yield clients
    for client in clients:
        client.close()


@pytest.fixture
def prefix() -> str:
    return f"fusionrec-test:{uuid.uuid4().hex}"


@pytest.fixture
def open_sharded(shard_urls: list[str], prefix: str) -> Iterator[Factory]:
    """Opens sharded stores on the first ``n_shards`` test databases, all under one key prefix."""
    opened: list[ShardedRedisServingStore] = []

    def factory(n_shards: int = 4, keep: int = 3, **kwargs: float) -> ShardedRedisServingStore:
        store = ShardedRedisServingStore(shard_urls[:n_shards], prefix=prefix, keep=keep, **kwargs)
        opened.append(store)
        return store

    yield factory
    if opened:
        factory().drop_all()
    for store in opened:
        store.close()


# ---- the serving-store contract of test_store.py, on four shards ---------------------------------------


@pytest.fixture
def open_backend(open_sharded: Factory) -> Factory:
    return open_sharded


@pytest.fixture
def store(open_sharded: Factory) -> ShardedRedisServingStore:
    return open_sharded()


test_publish_then_recommend = contract.test_publish_then_recommend_gives_the_users_list_cut_to_k
test_unknown_user_gets_the_fallback = contract.test_unknown_user_gets_the_fallback_with_cold_start
test_empty_list_gets_the_fallback = contract.test_user_with_an_empty_list_is_served_the_fallback
test_empty_store = contract.test_empty_store_has_nothing_to_serve_or_roll_back
test_rollback_is_fast = contract.test_rollback_switches_to_the_previous_version_fast
test_repeated_rollback = contract.test_repeated_rollback_walks_back_through_kept_versions
test_keep_prunes = contract.test_keep_prunes_old_versions_but_never_live_or_previous
test_versions_and_meta = contract.test_versions_and_meta_describe_what_was_published
test_publishing_twice_is_refused = contract.test_publishing_a_version_twice_is_refused_and_changes_nothing
test_publish_rejects_bad_arguments = contract.test_publish_rejects_bad_arguments
test_k_below_one = contract.test_recommend_rejects_k_below_one
test_numpy_values = contract.test_numpy_scores_and_meta_are_stored_as_plain_values
test_publishing_943_users_by_100_items = contract.test_publishing_943_users_by_100_items_takes_under_2s
test_concurrent_readers_shared_or_fresh = contract.test_concurrent_readers_never_see_a_mix_of_versions


# ---- placement ---------------------------------------------------------------------------------------


def test_users_spread_evenly_and_each_lives_on_exactly_one_shard(open_sharded: Factory, raw, prefix) -> None:
    store = open_sharded()
    recs, fallback = version_recs(1, n_users=4000, n_items=2)
    store.publish("v1", recs, fallback, {})
    held = [set(client.hkeys(f"{prefix}:v:v1:recs")) for client in raw]
    assert [len(h) for h in held] == pytest.approx([1000] * 4, abs=150)  # binomial sd ~27
    assert sum(len(h) for h in held) == len(set().union(*held)) == 4000  # nobody on two shards
    for user in recs:
        assert user in held[store.shard_ids.index(store.shard_for(user))]
    for client in raw:  # every shard can answer an unknown user by itself
        assert client.hget(f"{prefix}:v:v1:info", "fallback") is not None


def test_a_read_is_one_call_on_the_users_shard_with_the_pointer_cached(open_sharded: Factory) -> None:
    store = open_sharded()
    publish_version(store, 1, n_users=300)
    reader = open_sharded()
    reader.recommend("u0", 1)  # reads the pointer once
    calls: list[tuple[str, str]] = []
    for shard in reader._shards:
        shard.read = _spy(shard.read, lambda args, sid=shard.id: calls.append((sid, args[1])))
    pointer_reads: list[object] = []
    reader._pointer_script = _spy(reader._pointer_script, pointer_reads.append)

    users = [f"u{n}" for n in range(300)] + ["new-1", "new-2"]
    for user in users:
        answer = reader.recommend(user, 3)
        assert_one_version(answer)
        assert answer.cold_start == user.startswith("new")
    assert calls == [(reader.shard_for(user), user) for user in users]
    assert pointer_reads == []


def _spy(fn: Callable[..., object], record: Callable[..., object]) -> Callable[..., object]:
    def wrapper(*args: object, **kwargs: object) -> object:
        record(kwargs.get("args"))
        return fn(*args, **kwargs)

    return wrapper


def test_adding_a_fourth_shard_moves_a_quarter_of_the_users_all_to_it() -> None:
    three = ["a:6379/0", "b:6379/0", "c:6379/0"]
    four = [*three, "d:6379/0"]
    users = [f"user-{n}" for n in range(20000)]
    moved = [u for u in users if three[shard_of(u, three)] != four[shard_of(u, four)]]
    assert len(moved) / len(users) == pytest.approx(0.25, abs=0.02)
    assert {four[shard_of(u, four)] for u in moved} == {"d:6379/0"}
    # removing a shard moves only its own users
    without_b = ["a:6379/0", "c:6379/0", "d:6379/0"]
    moved = [u for u in users if four[shard_of(u, four)] != without_b[shard_of(u, without_b)]]
    assert {four[shard_of(u, four)] for u in moved} == {"b:6379/0"}


# ---- equivalence with one Redis ------------------------------------------------------------------------


def test_answers_are_those_of_the_single_redis_store(open_sharded: Factory, shard_urls) -> None:
    sharded = open_sharded()
    single = RedisServingStore(shard_urls[0], prefix=f"fusionrec-test:{uuid.uuid4().hex}")
    try:
        for store in (single, sharded):
            for idx in (1, 2):
                recs, fallback = version_recs(idx, n_users=200, n_items=20)
                context = {"popular": [[f"v{idx}/pop0", 1.0]], "items": {"i": ["t", "c", "b", 1.0]}}
                store.publish(f"v{idx}", recs, fallback, {"idx": idx}, context=context)
            store.put_setting("rules", '{"boosts": []}')
        _assert_same(single, sharded, [f"u{n}" for n in range(210)])
        assert single.rollback() == sharded.rollback() == "v1"
        _assert_same(single, sharded, [f"u{n}" for n in range(0, 210, 7)])
    finally:
        single.drop_all()
        single.close()


def _assert_same(single: RedisServingStore, sharded: ShardedRedisServingStore, users: list[str]) -> None:
    for user in users:
        assert sharded.candidates(user) == single.candidates(user)
        assert sharded.candidates(user, "v2") == single.candidates(user, "v2")
        assert sharded.recommend(user, 5) == single.recommend(user, 5)
    strip = [{k: v for k, v in entry.items() if k != "created_at"} for entry in single.versions()]
    assert [{k: v for k, v in e.items() if k != "created_at"} for e in sharded.versions()] == strip
    assert (sharded.live_version(), sharded.previous_version()) == (
        single.live_version(),
        single.previous_version(),
    )
    assert sharded.meta() == single.meta()
    assert sharded.context("v1") == single.context("v1")
    assert sharded.get_setting("rules") == single.get_setting("rules")


# ---- atomic promotion, rollback, pruning ----------------------------------------------------------------


def test_readers_with_cached_pointers_never_see_a_mix_while_versions_flip(open_sharded: Factory) -> None:
    """Independent readers (short pointer cache) read while a publisher flips and prunes (keep=1) versions."""
    publisher = open_sharded(keep=1)
    publish_version(publisher, 0, n_users=300, n_items=20)
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[str] = set()

    def read_loop(reader: ShardedRedisServingStore, seed: int) -> None:
        last, n = -1, 0
        try:
            while not stop.is_set() or n < 50:
                user = f"u{(seed * 37 + n) % 360}"  # 1 in 6 unknown: the fallback path too
                answer = reader.recommend(user, 20)
                assert_one_version(answer)  # every item from the version it claims
                assert answer.cold_start == (int(user[1:]) >= 300), f"{user} got a half-written version"
                assert int(answer.model_version[1:]) >= last, "a reader went back to an older version"
                last = int(answer.model_version[1:])
                seen.add(answer.model_version)
                n += 1
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    readers = [open_sharded(keep=1, pointer_ttl=ttl) for ttl in (0.0, 0.005, 0.05)]
    threads = [threading.Thread(target=read_loop, args=(r, i)) for i, r in enumerate(readers)]
    for t in threads:
        t.start()
    for idx in range(1, 9):
        publish_version(publisher, idx, n_users=300, n_items=20)
        time.sleep(0.03)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors[0]
    assert len(seen) >= 3, f"readers never overlapped the publishes: {seen}"


def test_a_version_pruned_under_a_cached_pointer_is_noticed_at_once(open_sharded: Factory) -> None:
    writer, reader = open_sharded(keep=1), open_sharded(keep=1, pointer_ttl=600)
    publish_version(writer, 1)
    assert reader.recommend("u1", 3).model_version == "v1"
    publish_version(writer, 2)
    assert reader.recommend("u1", 3).model_version == "v1"  # cached pointer: v1, whole and still kept
    publish_version(writer, 3)  # v1 is neither live nor previous any more: deleted on every shard
    answer = reader.recommend("u1", 3)
    assert (answer.model_version, answer.cold_start) == ("v3", False)
    assert_one_version(answer)


def test_rollback_and_activate_flip_the_pointer_for_every_reader(open_sharded: Factory) -> None:
    store, other = open_sharded(), open_sharded(pointer_ttl=0.0)
    publish_version(store, 1)
    publish_version(store, 2)
    assert other.recommend("u5", 2).model_version == "v2"
    assert store.rollback() == "v1"
    assert store.recommend("u5", 2).model_version == "v1"  # the store that rolled back: at once
    assert other.recommend("u5", 2).model_version == "v1"
    store.activate("v2")
    assert (store.live_version(), store.previous_version()) == ("v2", "v1")
    assert_one_version(store.recommend("u5", 2))
    assert store.recommend("u5", 2).model_version == other.recommend("u5", 2).model_version == "v2"


def test_old_versions_are_pruned_on_every_shard(open_sharded: Factory, raw, prefix) -> None:
    store = open_sharded(keep=2)
    for idx in range(1, 5):
        publish_version(store, idx, n_users=100)
    assert [v["version"] for v in store.versions()] == ["v4", "v3"]
    for client in raw:
        versions = {key.split(":v:")[1].rsplit(":", 1)[0] for key in client.scan_iter(f"{prefix}:v:*")}
        assert versions == {"v3", "v4"}
        assert client.hlen(f"{prefix}:v:v4:recs") > 0


# ---- resharding ----------------------------------------------------------------------------------------


def test_resharding_three_to_four_moves_a_quarter_and_keeps_old_versions_readable(
    open_sharded: Factory, raw, prefix
) -> None:
    three, four = open_sharded(n_shards=3), open_sharded(n_shards=4)
    publish_version(three, 1, n_users=2000, n_items=3)
    publish_version(four, 2, n_users=2000, n_items=3)
    before = [set(client.hkeys(f"{prefix}:v:v1:recs")) for client in raw]
    after = [set(client.hkeys(f"{prefix}:v:v2:recs")) for client in raw]
    assert before[3] == set()
    moved = after[3]
    assert len(moved) / 2000 == pytest.approx(0.25, abs=0.04)
    assert all(after[n] == before[n] - moved for n in range(3))  # nobody else moved

    for user in ("u0", "u17", "u1999", next(iter(moved))):
        assert four.recommend(user, 3).model_version == "v2"
        old = four.candidates(user, "v1")  # v1 is read where it was written (3 shards)
        assert (old.version, old.cold_start) == ("v1", False)
    assert four.rollback() == "v1"
    assert all(not four.recommend(f"u{n}", 3).cold_start for n in range(0, 2000, 50))
    with pytest.raises(ServingStoreError, match="not in FUSIONREC_SERVING_SHARDS"):
        three.candidates(next(iter(moved)), "v2")  # a store that does not know the fourth shard
    with pytest.raises(ServingStoreError, match="not in FUSIONREC_SERVING_SHARDS"):
        open_sharded(n_shards=2).activate("v1")  # v1 has users on the third shard


def test_a_single_redis_store_becomes_shard_zero_with_its_versions(
    open_sharded: Factory, shard_urls, prefix
) -> None:
    """Migration: FUSIONREC_SERVING_SHARDS starting with the old Redis keeps its versions servable."""
    single = RedisServingStore(shard_urls[0], prefix=prefix)
    publish_version(single, 1, n_users=50)
    single.close()
    sharded = open_sharded()
    assert all(sharded.recommend(f"u{n}", 2).model_version == "v1" for n in range(50))
    publish_version(sharded, 2, n_users=50)
    assert sharded.rollback() == "v1"
    answer = sharded.recommend("u42", 2)
    assert (answer.model_version, answer.cold_start) == ("v1", False)


# ---- a shard down ----------------------------------------------------------------------------------------


def test_a_shard_down_fails_its_users_only_and_blocks_publishing(shard_urls, prefix) -> None:
    proxy = TcpProxy((REDIS_HOST, REDIS_PORT))
    urls = [*shard_urls[:3], f"redis://127.0.0.1:{proxy.port}/{DBS[3]}"]
    store = ShardedRedisServingStore(urls, prefix=prefix, timeout=0.5)
    try:
        publish_version(store, 1, n_users=200)
        down = [f"u{n}" for n in range(200) if store.shard_for(f"u{n}") == store.shard_ids[3]]
        up = [f"u{n}" for n in range(200) if store.shard_for(f"u{n}") != store.shard_ids[3]]
        proxy.cut()
        for user in down[:3]:
            with pytest.raises(StoreUnavailableError, match=f"shard 127.0.0.1:{proxy.port}/14"):
                store.recommend(user, 3)
        assert all(store.recommend(user, 3).model_version == "v1" for user in up[:20])
        with pytest.raises(StoreUnavailableError):
            publish_version(store, 2, n_users=200)
        assert store.live_version() == "v1"
        with redis.Redis.from_url(shard_urls[0]) as client:  # the failed version left nothing behind
            assert not list(client.scan_iter(f"{prefix}:v:v2:*"))
        proxy.restore()
        assert store.recommend(down[0], 3).model_version == "v1"
    finally:
        proxy.cut()
        ShardedRedisServingStore(shard_urls, prefix=prefix).drop_all()
        store.close()


def test_with_the_coordinator_down_readers_keep_the_last_pointer(shard_urls, prefix) -> None:
    proxy = TcpProxy((REDIS_HOST, REDIS_PORT))
    urls = [f"redis://127.0.0.1:{proxy.port}/{DBS[0]}", *shard_urls[1:]]
    store = ShardedRedisServingStore(urls, prefix=prefix, timeout=0.5, pointer_ttl=0.05)
    try:
        publish_version(store, 1, n_users=100)
        coordinator = store.shard_ids[0]
        on_coordinator = [f"u{n}" for n in range(100) if store.shard_for(f"u{n}") == coordinator]
        elsewhere = [f"u{n}" for n in range(100) if store.shard_for(f"u{n}") != coordinator]
        proxy.cut()
        time.sleep(0.1)  # past pointer_ttl: the next read tries the coordinator, fails, keeps v1
        assert all(store.recommend(user, 3).model_version == "v1" for user in elsewhere)
        with pytest.raises(StoreUnavailableError, match=coordinator):
            store.recommend(on_coordinator[0], 3)
        with pytest.raises(StoreUnavailableError):
            store.live_version()
        with pytest.raises(StoreUnavailableError):  # a store that never saw a pointer has nothing to serve
            ShardedRedisServingStore(urls, prefix=prefix, timeout=0.5).recommend(elsewhere[0], 3)
    finally:
        proxy.cut()
        ShardedRedisServingStore(shard_urls, prefix=prefix).drop_all()
        store.close()


def test_api_answers_degraded_while_the_users_shard_is_down(tmp_path, monkeypatch, shard_urls) -> None:
    """Through open_store and the API: the shard's circuit breaker catches its StoreUnavailableError, and only
    that shard's users are degraded."""
    proxies = [TcpProxy((REDIS_HOST, REDIS_PORT)) for _ in DBS]
    urls = [f"redis://127.0.0.1:{p.port}/{db}" for p, db in zip(proxies, DBS, strict=True)]
    monkeypatch.setenv(SHARDS_ENV, ",".join(urls))
    cfg = RunConfig.from_env(home=tmp_path, serving_store="redis")
    store = open_store(cfg)
    try:
        assert isinstance(store, ShardedRedisServingStore)
        publish(cfg)  # the tiny version of tests/serving/conftest.py, through open_store
        holder_id = store.shard_for(stored_user_id("u1", cfg.pseudonymise))
        holder = proxies[store.shard_ids.index(holder_id)]
        with TestClient(create_app(cfg)) as client:
            body = client.get("/recommendations/u1?k=2").json()
            assert (body["degraded"], [i["item_id"] for i in body["items"]]) == (False, ["i1", "i2"])
            assert client.get("/health").json()["store"] == "redis-sharded"
            holder.cut()
            body = client.get("/recommendations/u1?k=2").json()
            assert (body["degraded"], [i["item_id"] for i in body["items"]]) == (True, ["i6", "i4"])
            # the breaker is per shard: a user on a live shard, asked at once, is answered normally
            elsewhere = next(
                u
                for u in (f"new{n}" for n in range(100))
                if store.shard_for(stored_user_id(u, cfg.pseudonymise)) != holder_id
            )
            assert client.get(f"/recommendations/{elsewhere}?k=2").json()["degraded"] is False
            assert client.get("/recommendations/u1?k=2").json()["degraded"] is True  # still its own breaker
            holder.restore()
            time.sleep(BREAKER_SECONDS + 0.1)
            deadline = time.monotonic() + 10
            while client.get("/recommendations/u1?k=2").json()["degraded"]:
                assert time.monotonic() < deadline, "did not recover after the shard came back"
                time.sleep(0.2)
    finally:
        for proxy in proxies:
            proxy.cut()
        store.close()
        direct = ShardedRedisServingStore(shard_urls, prefix=default_redis_prefix(cfg))
        direct.drop_all()
        direct.close()


# ---- configuration -----------------------------------------------------------------------------------------


def test_open_store_uses_the_shards_only_for_the_redis_store(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(SHARDS_ENV, " redis://h1:6379/0, redis://h2:6380/3 ,")
    sharded = open_store(RunConfig.from_env(home=tmp_path, serving_store="redis"))  # connects lazily
    assert isinstance(sharded, ShardedRedisServingStore)
    assert sharded.shard_ids == ("h1:6379/0", "h2:6380/3")
    assert sharded.prefix == default_redis_prefix(RunConfig.from_env(home=tmp_path))
    sharded.close()
    sqlite = open_store(RunConfig.from_env(home=tmp_path, serving_store="sqlite"))
    assert isinstance(sqlite, SQLiteServingStore)
    sqlite.close()
    for bad, message in (("http://h1:80", "not a redis:// URL"), ("redis://h/0,redis://h/0", "twice")):
        monkeypatch.setenv(SHARDS_ENV, bad)
        with pytest.raises(ServingStoreError, match=message):
            open_store(RunConfig.from_env(home=tmp_path, serving_store="redis"))
