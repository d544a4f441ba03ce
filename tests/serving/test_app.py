"""The HTTP API: response shapes, validation, 503 before the first promote, health, OpenAPI, uvicorn serve."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from fusionrec.config import RunConfig
from pipelines.privacy import stored_user_id
from serving.app import create_app
from serving.store import open_store


def publish(cfg: RunConfig, version: str = "v1") -> None:
    """Promote a tiny version through a separate store object, as the pipeline would: keyed by the users'
    pseudonyms, which the API computes from the ids in requests."""
    store = open_store(cfg)
    recs = {
        stored_user_id("u1", cfg.pseudonymise): [("i3", 0.9), ("i1", 0.5), ("i2", 0.25)],
        stored_user_id("u2", cfg.pseudonymise): [(f"i{j}", 1.0 / (j + 1)) for j in range(100)],
    }
    store.publish(version, recs, [("pop1", 30.0), ("pop2", 20.0)], {"source": "test"})
    store.close()


@pytest.fixture
def cfg(tmp_path) -> RunConfig:
    return RunConfig.from_env(home=tmp_path, serving_store="sqlite")


@pytest.fixture
def client(cfg: RunConfig) -> Iterator[TestClient]:
    with TestClient(create_app(cfg)) as client:
        yield client


def test_recommendations_return_the_documented_shape(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    response = client.get("/recommendations/u1", params={"k": 2})
    assert response.status_code == 200
    assert response.json() == {
        "user_id": "u1",
        "items": [{"item_id": "i3", "score": 0.9}, {"item_id": "i1", "score": 0.5}],
        "model_version": "v1",
        "cold_start": False,
    }


def test_k_defaults_to_10_and_allows_100(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    assert len(client.get("/recommendations/u2").json()["items"]) == 10
    assert len(client.get("/recommendations/u2?k=100").json()["items"]) == 100


def test_unknown_user_gets_the_fallback(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    body = client.get("/recommendations/stranger?k=5").json()
    assert body["cold_start"] is True
    assert [i["item_id"] for i in body["items"]] == ["pop1", "pop2"]


@pytest.mark.parametrize("k", ["0", "1000", "-3", "ten"])
def test_k_outside_1_to_100_is_a_422(cfg: RunConfig, client: TestClient, k: str) -> None:
    publish(cfg)
    response = client.get(f"/recommendations/u1?k={k}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "k"]


def test_503_with_a_clear_error_before_any_promote(client: TestClient) -> None:
    response = client.get("/recommendations/u1")
    assert response.status_code == 503
    assert "no model version has been promoted" in response.json()["detail"]


def test_health_reports_status_live_version_and_store(cfg: RunConfig, client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "no_model", "model_version": None, "store": "sqlite"}
    publish(cfg)
    assert client.get("/health").json() == {"status": "ok", "model_version": "v1", "store": "sqlite"}


def test_a_promote_or_rollback_is_served_without_restarting(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg, "v1")
    publish(cfg, "v2")
    assert client.get("/recommendations/u1").json()["model_version"] == "v2"
    store = open_store(cfg)
    store.rollback()
    store.close()
    assert client.get("/recommendations/u1").json()["model_version"] == "v1"


def test_versions_lists_live_and_previous(cfg: RunConfig, client: TestClient) -> None:
    assert client.get("/versions").json() == []
    publish(cfg, "v1")
    publish(cfg, "v2")
    listed = client.get("/versions").json()
    assert [(v["version"], v["live"], v["previous"]) for v in listed] == [
        ("v2", True, False),
        ("v1", False, True),
    ]
    assert listed[0]["meta"] == {"source": "test"}


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/recommendations/{user_id}", "/health", "/versions"} <= set(schema["paths"])
    params = {p["name"]: p for p in schema["paths"]["/recommendations/{user_id}"]["get"]["parameters"]}
    assert params["k"]["schema"]["minimum"] == 1
    assert params["k"]["schema"]["maximum"] == 100
    assert "503" in schema["paths"]["/recommendations/{user_id}"]["get"]["responses"]


@pytest.mark.services
def test_the_app_serves_from_redis(tmp_path, redis_url: str) -> None:
    # The key prefix is derived from this test's home, so parallel runs do not clash.
    cfg = RunConfig.from_env(home=tmp_path, serving_store="redis", redis_url=redis_url)
    try:
        publish(cfg)
        with TestClient(create_app(cfg)) as client:
            assert client.get("/health").json() == {"status": "ok", "model_version": "v1", "store": "redis"}
            assert client.get("/recommendations/u1?k=1").json()["items"] == [{"item_id": "i3", "score": 0.9}]
    finally:
        store = open_store(cfg)
        store.drop_all()  # type: ignore[attr-defined]
        store.close()


def test_unreachable_redis_is_a_503_with_the_reason(tmp_path) -> None:
    cfg = RunConfig.from_env(
        home=tmp_path, serving_store="redis", redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    with TestClient(create_app(cfg)) as client:
        for path in ("/health", "/recommendations/u1"):
            response = client.get(path)
            assert response.status_code == 503
            assert "unreachable" in response.json()["detail"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_runs_the_api_under_uvicorn(cfg: RunConfig) -> None:
    publish(cfg)
    port = free_port()
    code = (
        "from fusionrec.config import RunConfig; from serving.app import serve; "
        f"serve(RunConfig.from_env(home={str(cfg.home)!r}), port={port})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/recommendations/u1?k=1", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json()["model_version"] == "v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
