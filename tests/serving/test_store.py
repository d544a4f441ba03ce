"""The versioned serving store, run against both backends (SQLite always, Redis when 127.0.0.1:6379 answers)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from fusionrec.config import RunConfig
from serving.store import (
    NoLiveVersionError,
    RedisServingStore,
    ServingStore,
    ServingStoreError,
    SQLiteServingStore,
    default_redis_prefix,
    open_store,
)


def version_recs(
    idx: int, n_users: int = 20, n_items: int = 10
) -> tuple[dict[str, list[tuple[str, float]]], list[tuple[str, float]]]:
    """Recs for version ``v<idx>`` where every item id starts with the version and every score // 1000 == idx."""
    version = f"v{idx}"
    recs = {
        f"u{u}": [(f"{version}/u{u}/i{j}", idx * 1000.0 + n_items - j) for j in range(n_items)]
        for u in range(n_users)
    }
    fallback = [(f"{version}/pop{j}", idx * 1000.0 + n_items - j) for j in range(n_items)]
    return recs, fallback


def publish_version(store: ServingStore, idx: int, **kwargs: int) -> str:
    recs, fallback = version_recs(idx, **kwargs)
    store.publish(f"v{idx}", recs, fallback, {"idx": idx, "metrics": {"ndcg@10": 0.1 * idx}})
    return f"v{idx}"


def assert_one_version(answer) -> None:
    """Every item of the answer comes from the version the answer claims."""
    assert answer.items, "empty answer"
    idx = int(answer.model_version[1:])
    for rec in answer.items:
        assert rec.item_id.startswith(answer.model_version + "/"), (answer.model_version, rec.item_id)
        assert int(rec.score // 1000) == idx, (answer.model_version, rec.score)


StoreFactory = Callable[..., ServingStore]


@pytest.fixture(
    params=["sqlite", pytest.param("redis", marks=pytest.mark.services)],
)
def open_backend(request, tmp_path) -> Iterator[StoreFactory]:
    """Opens stores of one backend, all on the same location (file or key prefix); cleans up after."""
    kind = request.param
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else ""  # skips if unreachable
    prefix = f"fusionrec-test:{uuid.uuid4().hex}"
    opened: list[ServingStore] = []

    def factory(keep: int = 3) -> ServingStore:
        if kind == "sqlite":
            store: ServingStore = SQLiteServingStore(tmp_path / "serving.db", keep=keep)
        else:
            store = RedisServingStore(redis_url, prefix=prefix, keep=keep)
        opened.append(store)
        return store

    yield factory
    if kind == "redis":
        opened[0].drop_all()  # type: ignore[attr-defined]
    for store in opened:
        store.close()


@pytest.fixture
def store(open_backend: StoreFactory) -> ServingStore:
    return open_backend()


def test_publish_then_recommend_gives_the_users_list_cut_to_k(store: ServingStore) -> None:
    publish_version(store, 1)
    answer = store.recommend("u3", 4)
    assert answer.user_id == "u3"
    assert answer.model_version == "v1"
    assert answer.cold_start is False
    assert [r.item_id for r in answer.items] == [f"v1/u3/i{j}" for j in range(4)]
    assert [r.score for r in answer.items] == [1010.0, 1009.0, 1008.0, 1007.0]
    assert len(store.recommend("u3", 100).items) == 10  # k beyond the list: the whole list


def test_unknown_user_gets_the_fallback_with_cold_start(store: ServingStore) -> None:
    publish_version(store, 1)
    answer = store.recommend("never-seen", 3)
    assert answer.cold_start is True
    assert answer.model_version == "v1"
    assert [r.item_id for r in answer.items] == ["v1/pop0", "v1/pop1", "v1/pop2"]


def test_user_with_an_empty_list_is_served_the_fallback(store: ServingStore) -> None:
    recs, fallback = version_recs(1)
    recs["u0"] = []
    store.publish("v1", recs, fallback, {})
    assert store.recommend("u0", 2).cold_start is True
    assert store.versions()[0]["n_users"] == 19


def test_empty_store_has_nothing_to_serve_or_roll_back(store: ServingStore) -> None:
    assert store.live_version() is None
    assert store.previous_version() is None
    assert store.versions() == []
    with pytest.raises(NoLiveVersionError, match="no model version"):
        store.recommend("u1", 5)
    with pytest.raises(NoLiveVersionError):
        store.meta()
    with pytest.raises(ServingStoreError, match="nothing to roll back"):
        store.rollback()


def test_rollback_switches_to_the_previous_version_fast(open_backend: StoreFactory) -> None:
    store = open_backend()
    recs, fallback = version_recs(1, n_users=943, n_items=100)
    store.publish("v1", recs, fallback, {})
    recs, fallback = version_recs(2, n_users=943, n_items=100)
    store.publish("v2", recs, fallback, {})
    assert (store.live_version(), store.previous_version()) == ("v2", "v1")

    started = time.perf_counter()
    assert store.rollback() == "v1"
    elapsed = time.perf_counter() - started

    assert elapsed < 0.2, f"rollback took {elapsed:.3f}s"
    assert store.live_version() == "v1"
    assert store.previous_version() is None  # nothing older than v1
    assert store.recommend("u7", 5).model_version == "v1"
    assert open_backend().recommend("u7", 5).model_version == "v1"  # another process sees it too
    with pytest.raises(ServingStoreError, match="nothing to roll back to"):
        store.rollback()


def test_repeated_rollback_walks_back_through_kept_versions(store: ServingStore) -> None:
    for idx in (1, 2, 3):
        publish_version(store, idx)
    assert store.rollback() == "v2"
    assert store.previous_version() == "v1"
    assert store.rollback() == "v1"
    assert store.previous_version() is None


def test_keep_prunes_old_versions_but_never_live_or_previous(open_backend: StoreFactory) -> None:
    store = open_backend(keep=2)
    publish_version(store, 1)
    publish_version(store, 2)
    store.rollback()  # live v1 (the oldest), no previous
    publish_version(store, 3)  # live v3, previous v1: v1 is beyond keep=2 but is the rollback target
    assert {v["version"] for v in store.versions()} == {"v1", "v2", "v3"}
    assert store.previous_version() == "v1"

    publish_version(store, 4)  # live v4, previous v3: v1 and v2 may go now
    assert [v["version"] for v in store.versions()] == ["v4", "v3"]
    with pytest.raises(ServingStoreError, match="unknown version"):
        store.meta("v1")

    publish_version(store, 5)
    publish_version(store, 6)
    assert [v["version"] for v in store.versions()] == ["v6", "v5"]


def test_versions_and_meta_describe_what_was_published(store: ServingStore) -> None:
    publish_version(store, 1)
    publish_version(store, 2)
    listed = store.versions()
    assert [v["version"] for v in listed] == ["v2", "v1"]
    assert [(v["live"], v["previous"]) for v in listed] == [(True, False), (False, True)]
    assert listed[0]["meta"] == {"idx": 2, "metrics": {"ndcg@10": pytest.approx(0.2)}}
    assert listed[0]["n_users"] == 20
    assert listed[0]["created_at"] >= listed[1]["created_at"]
    assert store.meta()["idx"] == 2
    assert store.meta("v1")["idx"] == 1
    with pytest.raises(ServingStoreError, match="unknown version 'nope'"):
        store.meta("nope")


def test_publishing_a_version_twice_is_refused_and_changes_nothing(store: ServingStore) -> None:
    publish_version(store, 1)
    publish_version(store, 2)
    with pytest.raises(ServingStoreError, match="already published"):
        publish_version(store, 1)
    assert (store.live_version(), store.previous_version()) == ("v2", "v1")
    assert store.recommend("u1", 1).items[0].item_id == "v2/u1/i0"


@pytest.mark.parametrize(
    ("version", "fallback", "message"),
    [("v1", [], "fallback list is empty"), ("bad name", [("i", 1.0)], "invalid version name")],
)
def test_publish_rejects_bad_arguments(store: ServingStore, version, fallback, message) -> None:
    with pytest.raises(ServingStoreError, match=message):
        store.publish(version, {"u1": [("i1", 1.0)]}, fallback, {})
    assert store.live_version() is None


def test_recommend_rejects_k_below_one(store: ServingStore) -> None:
    publish_version(store, 1)
    with pytest.raises(ServingStoreError, match="k must be >= 1"):
        store.recommend("u1", 0)


def test_numpy_scores_and_meta_are_stored_as_plain_values(store: ServingStore) -> None:
    np = pytest.importorskip("numpy")
    store.publish("v1", {"u1": [("i1", np.float32(0.5))]}, [("p", np.float64(2.0))], {"n": np.int64(3)})
    assert store.recommend("u1", 1).items[0].score == 0.5
    assert store.meta() == {"n": 3}


def test_publishing_943_users_by_100_items_takes_under_2s(store: ServingStore) -> None:
    recs, fallback = version_recs(1, n_users=943, n_items=100)
    started = time.perf_counter()
    store.publish("v1", recs, fallback, {"users": 943})
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"publish took {elapsed:.2f}s"
    answer = store.recommend("u942", 100)
    assert len(answer.items) == 100
    assert_one_version(answer)


def test_concurrent_readers_never_see_a_mix_of_versions(open_backend: StoreFactory) -> None:
    publisher = open_backend(keep=2)  # small keep: pruning happens while readers read
    publish_version(publisher, 0, n_users=200, n_items=50)
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[set[str]] = []

    def read_loop(reader: ServingStore, seed: int) -> None:
        got: set[str] = set()
        last = -1
        n = 0
        try:
            while not stop.is_set() or n < 20:
                user = f"u{(seed * 31 + n) % 250}"  # ~20% unknown users: fallback path too
                answer = reader.recommend(user, 50)
                assert_one_version(answer)
                assert answer.cold_start == (int(user[1:]) >= 200), f"{user} got a half-written version"
                idx = int(answer.model_version[1:])
                assert idx >= last, "a reader went back to an older version"
                last = idx
                got.add(answer.model_version)
                n += 1
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)
        seen.append(got)

    # Half the readers share the publisher's store object, half have their own (like other processes).
    readers = [publisher, publisher, open_backend(keep=2), open_backend(keep=2)]
    threads = [threading.Thread(target=read_loop, args=(r, i)) for i, r in enumerate(readers)]
    for t in threads:
        t.start()
    for idx in range(1, 7):
        publish_version(publisher, idx, n_users=200, n_items=50)
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join(timeout=30)

    assert not errors, errors[0]
    assert len(seen) == len(readers)
    assert len(set().union(*seen)) >= 2, "readers never overlapped a publish"
    assert publisher.live_version() == "v6"


def test_sqlite_reader_keeps_its_snapshot_while_a_publish_prunes_its_version(tmp_path) -> None:
    """Deterministic interleaving: v1 is published over and pruned right after a reader resolved the pointer."""
    writer = SQLiteServingStore(tmp_path / "serving.db", keep=1)
    publish_version(writer, 1)
    interleaved: list[bool] = []

    class InterleavedReader(SQLiteServingStore):
        def _pointer(self, conn):
            pointer = super()._pointer(conn)
            if not interleaved:
                interleaved.append(True)
                publish_version(writer, 2)
                publish_version(writer, 3)  # keep=1: v1 is neither live nor previous any more -> deleted
            return pointer

    reader = InterleavedReader(tmp_path / "serving.db")
    answer = reader.recommend("u1", 5)
    assert interleaved
    assert (answer.model_version, answer.cold_start) == ("v1", False)
    assert_one_version(answer)
    assert [v["version"] for v in writer.versions()] == ["v3", "v2"]
    assert reader.recommend("u1", 5).model_version == "v3"
    writer.close()
    reader.close()


def test_open_store_picks_the_backend_from_config(tmp_path) -> None:
    cfg = RunConfig.from_env(home=tmp_path, serving_store="sqlite")
    store = open_store(cfg)
    assert isinstance(store, SQLiteServingStore)
    assert store.path == cfg.paths.serving_db
    store.close()

    redis_cfg = RunConfig.from_env(home=tmp_path, serving_store="redis")
    other = RunConfig.from_env(home=tmp_path / "other", serving_store="redis")
    rstore = open_store(redis_cfg)  # the client connects lazily: no server needed here
    assert isinstance(rstore, RedisServingStore)
    assert rstore.prefix == default_redis_prefix(redis_cfg) != default_redis_prefix(other)
    custom = open_store(redis_cfg, redis_prefix="custom")
    assert custom.prefix == "custom"  # type: ignore[attr-defined]
    for s in (rstore, custom):
        s.close()
