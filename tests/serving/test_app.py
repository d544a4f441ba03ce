"""The HTTP API: answer shape, filters, diversity, explanations, cold start, 4xx, 503 before the first
promote, health, versions, OpenAPI, uvicorn serve."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from fusionrec.config import RunConfig
from serving.app import create_app
from serving.store import open_store
from tests.serving.conftest import free_port, items, publish


def test_recommendations_return_the_documented_shape(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    body = client.get("/recommendations/u1", params={"k": 2}).json()
    request_id = body.pop("request_id")
    assert len(request_id) == 32
    assert body == {
        "user_id": "u1",
        "items": [
            {
                "item_id": "i1",
                "score": 1.0,
                "category": "shoes",
                "brand": "acme",
                "price": 50.0,
                "explanation": {"kind": "viewed", "text": "because you viewed Wool Hat", "anchor_item": "i4"},
            },
            {
                "item_id": "i2",
                "score": 0.9,
                "category": "shoes",
                "brand": "acme",
                "price": 60.0,
                "explanation": {"kind": "model", "text": "matches your tastes", "anchor_item": None},
            },
        ],
        "model_version": "v1",
        "arm": "champion",
        "experiment": None,
        "cold_start": False,
        "degraded": False,
    }


def test_explain_false_leaves_explanations_out(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    assert "explanation" not in client.get("/recommendations/u1?k=1&explain=false").json()["items"][0]


def test_k_defaults_to_10_and_allows_100(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    assert len(client.get("/recommendations/u2").json()["items"]) == 10
    assert len(client.get("/recommendations/u2?k=100").json()["items"]) == 100


def test_unknown_user_gets_popular_items_explained(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    body = client.get("/recommendations/stranger?k=2").json()
    assert body["cold_start"] is True and body["degraded"] is False
    assert [i["item_id"] for i in body["items"]] == ["i6", "i4"]
    assert body["items"][0]["explanation"]["text"] == "popular in toys"


def test_cold_start_is_popular_in_the_requested_category(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    assert items(client.get("/recommendations/stranger?k=5&category=toys")) == ["i6", "i7"]


def test_category_filter_keeps_only_those_categories(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    assert items(client.get("/recommendations/u1?category=hats&category=toys")) == ["i4", "i6", "i5", "i7"]


def test_price_range_keeps_items_with_a_known_price_inside_it(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    assert items(client.get("/recommendations/u1?min_price=20&max_price=50")) == ["i1", "i4", "i5", "i7"]
    assert "i8" in items(client.get("/recommendations/u1"))  # no price: shown only without a price filter


def test_diversity_spreads_the_top_k_over_categories(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    assert items(client.get("/recommendations/u1?k=3")) == ["i1", "i2", "i3"]  # all shoes
    diverse = client.get("/recommendations/u1?k=3&diversity=0.7").json()["items"]
    assert [i["item_id"] for i in diverse] == ["i1", "i4", "i6"]
    assert len({i["category"] for i in diverse}) == 3


def test_promote_or_rollback_is_served_without_restarting(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg, "v1")
    publish(cfg, "v2", order=["i7", "i1"])
    assert items(client.get("/recommendations/u1?k=1")) == ["i7"]
    store = open_store(cfg)
    store.rollback()
    store.close()
    response = client.get("/recommendations/u1?k=1")
    assert response.json()["model_version"] == "v1" and items(response) == ["i1"]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("k=0", "k"),
        ("k=1000", "k"),
        ("k=-3", "k"),
        ("k=ten", "k"),
        ("diversity=2", "diversity"),
        ("min_price=-1", "min_price"),
        ("max_price=abc", "max_price"),
        ("min_price=50&max_price=10", "min_price 50.0 is above max_price 10.0"),
        ("colour=red", "unknown query parameter 'colour'"),
        ("exclude_purchased=maybe", "exclude_purchased"),
    ],
)
def test_bad_parameters_are_a_422_naming_the_parameter(
    cfg: RunConfig, client: TestClient, query: str, names: str
) -> None:
    publish(cfg)
    response = client.get(f"/recommendations/u1?{query}")
    assert response.status_code == 422
    assert names in response.json()["detail"]


@pytest.mark.parametrize("user", ["a%20b", "x" * 257, "semi;colon"])
def test_malformed_user_ids_are_a_422(cfg: RunConfig, client: TestClient, user: str) -> None:
    publish(cfg)
    response = client.get(f"/recommendations/{user}")
    assert response.status_code == 422
    assert response.json()["detail"].startswith("path.user_id:")


def test_503_with_a_clear_error_before_any_promote(client: TestClient) -> None:
    response = client.get("/recommendations/u1")
    assert response.status_code == 503
    assert "no model version has been promoted" in response.json()["detail"]


def test_health_reports_status_live_version_and_store(cfg: RunConfig, client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "no_model", "model_version": None, "store": "sqlite"}
    publish(cfg)
    assert client.get("/health").json() == {"status": "ok", "model_version": "v1", "store": "sqlite"}


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


def test_similar_items_are_content_neighbours(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    body = client.get("/items/i2/similar?k=1").json()
    assert [i["item_id"] for i in body["items"]] == ["i1"]
    assert body["items"][0]["explanation"]["text"] == "similar to Blue Shoe"
    missing = client.get("/items/nope/similar")
    assert missing.status_code == 404 and "not in the catalogue" in missing.json()["detail"]


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {
        "/recommendations/{user_id}",
        "/events",
        "/health",
        "/metrics",
        "/versions",
        "/admin/rollback",
        "/admin/rules",
        "/admin/experiment",
    } <= set(schema["paths"])
    params = {p["name"]: p for p in schema["paths"]["/recommendations/{user_id}"]["get"]["parameters"]}
    assert params["k"]["schema"]["minimum"] == 1 and params["k"]["schema"]["maximum"] == 100
    assert {"category", "min_price", "max_price", "exclude_purchased", "in_stock", "diversity"} <= set(params)
    assert "503" in schema["paths"]["/recommendations/{user_id}"]["get"]["responses"]


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


def test_a_version_without_a_context_is_still_served(cfg: RunConfig) -> None:
    """Versions promoted before contexts existed answer with bare items."""
    store = open_store(cfg)
    store.publish("old", {"u9": [("a", 1.0)]}, [("p", 1.0)], {})
    store.close()
    with TestClient(create_app(cfg.__class__.from_env(home=cfg.home, pseudonymise=False))) as client:
        body = client.get("/recommendations/u9").json()
    assert body["items"][0]["item_id"] == "a" and body["items"][0]["category"] is None
