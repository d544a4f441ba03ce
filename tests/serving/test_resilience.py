"""Answers keep coming when Redis or the feature store is down (flagged, counted, never a 5xx), and the API
recovers by itself when the service returns."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fusionrec.config import RunConfig
from serving.app import create_app
from serving.state import BREAKER_SECONDS
from serving.store import open_store
from tests.conftest import REDIS_HOST, REDIS_PORT
from tests.serving.conftest import TcpProxy, free_port, items, publish

pytestmark = pytest.mark.services


@pytest.fixture
def proxied(tmp_path, redis_url: str) -> Iterator[tuple[RunConfig, TcpProxy]]:
    """A Redis-backed home whose API reaches Redis through a proxy the test can cut."""
    proxy = TcpProxy((REDIS_HOST, REDIS_PORT))
    direct = RunConfig.from_env(home=tmp_path, serving_store="redis", redis_url=redis_url)
    publish(direct)
    via_proxy = RunConfig.from_env(
        home=tmp_path, serving_store="redis", redis_url=f"redis://127.0.0.1:{proxy.port}/0"
    )
    try:
        yield via_proxy, proxy
    finally:
        proxy.cut()
        store = open_store(direct)
        store.drop_all()  # type: ignore[attr-defined]
        store.close()


def fallback_count(client: TestClient, reason: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'fusionrec_fallbacks_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_redis_down_answers_popular_items_flagged_then_recovers(proxied) -> None:
    cfg, proxy = proxied
    with TestClient(create_app(cfg)) as client:
        assert client.get("/recommendations/u1?k=2").json()["degraded"] is False
        proxy.cut()
        started = time.perf_counter()
        for _ in range(20):
            response = client.get("/recommendations/u1?k=2")
            assert response.status_code == 200
            body = response.json()
            assert body["degraded"] is True and body["cold_start"] is True
            assert [i["item_id"] for i in body["items"]] == ["i6", "i4"]  # the popular list
        assert time.perf_counter() - started < 3.0  # the breaker spares each request the timeout
        assert fallback_count(client, "store_unavailable") == 20
        assert client.get("/health").json()["status"] == "degraded"
        proxy.restore()
        time.sleep(BREAKER_SECONDS + 0.1)
        deadline = time.monotonic() + 10
        while client.get("/recommendations/u1?k=2").json()["degraded"]:
            assert time.monotonic() < deadline, "did not recover after Redis came back"
            time.sleep(0.2)
        assert items(client.get("/recommendations/u1?k=2")) == ["i1", "i2"]
        assert client.get("/health").json()["status"] == "ok"


def test_redis_down_at_start_up_serves_the_last_popular_list_from_disk(proxied) -> None:
    cfg, proxy = proxied
    with TestClient(create_app(cfg)) as client:
        client.get("/recommendations/u1")  # loads the context, which leaves the fallback file
    proxy.cut()
    with TestClient(create_app(cfg)) as client:
        body = client.get("/recommendations/u1?k=1").json()
    assert body["degraded"] is True and body["model_version"] == "v1" and body["items"][0]["item_id"] == "i6"


def test_redis_never_seen_and_no_fallback_is_a_clear_503(tmp_path) -> None:
    cfg = RunConfig.from_env(
        home=tmp_path, serving_store="redis", redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    with TestClient(create_app(cfg)) as client:
        response = client.get("/recommendations/u1")
        assert response.status_code == 503 and "unreachable" in response.json()["detail"]
        assert client.get("/health").json() == {"status": "degraded", "model_version": None, "store": "redis"}


def test_feature_store_down_falls_back_to_overall_popularity(cfg: RunConfig, client: TestClient) -> None:
    """A cold-start user's favourite categories come from Feast; a broken registry must not break answers."""
    publish(cfg)
    cfg.paths.features.mkdir(parents=True)
    (cfg.paths.features / "registry.db").write_bytes(b"not a feast registry")
    response = client.get("/recommendations/stranger?k=2")
    assert response.status_code == 200
    body = response.json()
    assert body["degraded"] is True and [i["item_id"] for i in body["items"]] == ["i6", "i4"]
    assert fallback_count(client, "feature_store_unavailable") == 1
    assert client.get("/recommendations/u1?k=1").json()["degraded"] is False  # known users need no Feast
