"""Merchandising rules, feedback events, admin auth and operations, A/B arms, Prometheus metrics."""

from __future__ import annotations

import uuid

import pytest
import yaml
from fastapi.testclient import TestClient

from fusionrec.config import RunConfig
from pipelines.privacy import stored_user_id
from serving.app import create_app
from serving.events import open_event_store
from serving.store import open_store
from tests.serving.conftest import AUTH, TOKEN, items, publish

# ---- merchandising rules ---------------------------------------------------------------------------


def put_rules(client: TestClient, rules: dict) -> None:
    response = client.put("/admin/rules", json=rules, headers=AUTH)
    assert response.status_code == 200, response.text


def test_a_pinned_item_takes_its_slot(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    put_rules(client, {"pins": [{"item": "i7", "slot": 2}]})
    response = client.get("/recommendations/u1?k=3")
    assert items(response) == ["i1", "i7", "i2"]
    assert response.json()["items"][1]["explanation"]["kind"] == "pinned"


def test_boost_and_bury_reorder_by_category_and_brand(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    put_rules(client, {"boosts": [{"category": "toys", "factor": 3.0}, {"brand": "acme", "factor": 0.1}]})
    # toys i6 (0.6*3=1.8) and i7 (0.4*3=1.2) first; acme items i1 i2 i4 buried below the rest
    assert items(client.get("/recommendations/u1")) == ["i6", "i7", "i3", "i5", "i8", "i1", "i2", "i4"]


def test_blocked_and_out_of_stock_items_are_hidden(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    put_rules(client, {"blocked": [{"item": "i1", "reason": "recalled"}], "out_of_stock": ["i2"]})
    assert items(client.get("/recommendations/u1?k=2")) == ["i3", "i4"]
    assert items(client.get("/recommendations/u1?k=2&in_stock=false")) == ["i2", "i3"]  # blocked stays out


def test_the_rules_file_is_applied_at_start_and_written_by_the_admin_api(cfg: RunConfig) -> None:
    publish(cfg)
    cfg.paths.merch_rules.write_text(yaml.safe_dump({"blocked": [{"item": "i1"}]}))
    with TestClient(create_app(cfg)) as client:
        assert items(client.get("/recommendations/u1?k=1")) == ["i2"]
        put_rules(client, {"blocked": [{"item": "i2"}]})
        assert yaml.safe_load(cfg.paths.merch_rules.read_text())["blocked"][0]["item"] == "i2"
        assert items(client.get("/recommendations/u1?k=1")) == ["i1"]
        cfg.paths.merch_rules.write_text(yaml.safe_dump({"blocked": [{"item": "i3"}]}))
        assert client.post("/admin/reload", headers=AUTH).status_code == 200
        assert client.get("/admin/rules", headers=AUTH).json()["blocked"] == [{"item": "i3", "reason": ""}]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"pins": [{"item": "i1", "slot": 0}]}, "pins.0.slot"),
        ({"boosts": [{"category": "a", "brand": "b", "factor": 2}]}, "exactly one of category or brand"),
        ({"boosts": [{"category": "a", "factor": -1}]}, "boosts.0.factor"),
        ({"colour": "red"}, "colour"),
        ({"pins": [{"item": "a", "slot": 1}, {"item": "b", "slot": 1}]}, "two pins share a slot"),
    ],
)
def test_invalid_rules_are_a_422_saying_what(
    cfg: RunConfig, client: TestClient, rules: dict, message: str
) -> None:
    response = client.put("/admin/rules", json=rules, headers=AUTH)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_a_broken_rules_file_is_refused_on_reload_naming_the_file(cfg: RunConfig, client: TestClient) -> None:
    cfg.paths.merch_rules.write_text("pins:\n  - {item: a, slot: 500}\n")
    response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 422
    assert (
        str(cfg.paths.merch_rules) in response.json()["detail"] and "pins.0.slot" in response.json()["detail"]
    )


# ---- feedback events ---------------------------------------------------------------------------------


def test_events_are_stored_with_pseudonymised_users(cfg: RunConfig, client: TestClient) -> None:
    batch = {
        "events": [
            {"event_type": "impression", "user_id": "u1", "item_id": "i1", "arm": "champion", "position": 0},
            {"event_type": "click", "user_id": "u1", "item_id": "i1", "request_id": "r1"},
            {
                "event_type": "purchase",
                "user_id": "u1",
                "item_id": "i1",
                "order_value": 99.5,
                "quantity": 2,
                "timestamp": "2026-01-02T03:04:05Z",
            },
        ]
    }
    response = client.post("/events", json=batch)
    assert response.status_code == 202 and response.json() == {"received": 3, "accepted": 3}
    store = open_event_store(cfg)
    frame = store.frame()
    store.close()
    assert list(frame["event_type"]) == ["purchase", "impression", "click"]  # ordered by time
    assert set(frame["user_id"]) == {stored_user_id("u1", cfg.pseudonymise)} != {"u1"}
    assert frame.iloc[0]["order_value"] == 99.5 and frame.iloc[0]["quantity"] == 2


def test_a_resent_event_id_is_not_stored_twice(client: TestClient) -> None:
    event = {"event_type": "click", "user_id": "u1", "item_id": "i1", "event_id": uuid.uuid4().hex}
    assert client.post("/events", json={"events": [event]}).json()["accepted"] == 1
    assert client.post("/events", json={"events": [event]}).json() == {"received": 1, "accepted": 0}


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"event_type": "like", "user_id": "u", "item_id": "i"}, "event_type"),
        ({"event_type": "purchase", "user_id": "u", "item_id": "i"}, "a purchase needs order_value"),
        ({"event_type": "click", "user_id": "u", "item_id": "i", "order_value": 3}, "only for purchases"),
        ({"event_type": "click", "user_id": "u u", "item_id": "i"}, "user_id"),
        ({"event_type": "click", "user_id": "u", "item_id": "i", "timestamp": "1999-01-01T00:00:00"}, "2000"),
        ({"event_type": "click", "user_id": "u", "item_id": "i", "position": -1}, "position"),
        ({"event_type": "click", "user_id": "u", "item_id": "i", "extra": 1}, "extra"),
        ({"event_type": "click", "user_id": "u"}, "item_id"),
    ],
)
def test_invalid_events_are_a_422_naming_the_field(client: TestClient, event: dict, message: str) -> None:
    response = client.post("/events", json={"events": [event]})
    assert response.status_code == 422 and message in response.json()["detail"]


def test_event_batches_are_1_to_1000_events(client: TestClient) -> None:
    one = {"event_type": "click", "user_id": "u", "item_id": "i"}
    assert client.post("/events", json={"events": []}).status_code == 422
    assert client.post("/events", json={"events": [one] * 1001}).status_code == 422
    assert client.post("/events", json={"events": [one] * 1000}).status_code == 202


def test_bought_and_dismissed_items_never_come_back_unless_repeats(
    cfg: RunConfig, client: TestClient
) -> None:
    publish(cfg)
    client.post(
        "/events",
        json={
            "events": [
                {"event_type": "purchase", "user_id": "u1", "item_id": "i1", "order_value": 50},
                {"event_type": "dismiss", "user_id": "u1", "item_id": "i2"},
            ]
        },
    )
    assert items(client.get("/recommendations/u1?k=2")) == ["i3", "i4"]
    assert items(client.get("/recommendations/u1?k=2&exclude_purchased=false")) == ["i1", "i2"]
    put_rules(client, {"repeats": True})  # e.g. groceries
    assert items(client.get("/recommendations/u1?k=2")) == ["i1", "i2"]
    put_rules(client, {})
    # a restarted API remembers them (read back from the event store)
    with TestClient(create_app(cfg)) as fresh:
        assert items(fresh.get("/recommendations/u1?k=2")) == ["i3", "i4"]


def test_a_new_user_who_clicked_gets_content_neighbours(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    client.post("/events", json={"events": [{"event_type": "click", "user_id": "newbie", "item_id": "i2"}]})
    body = client.get("/recommendations/newbie?k=3").json()
    assert [i["item_id"] for i in body["items"]] == ["i1", "i3", "i6"]
    assert body["items"][0]["explanation"] == {
        "kind": "similar",
        "text": "similar to Blue Shoe",
        "anchor_item": "i2",
    }


@pytest.mark.services
def test_events_go_to_postgres_when_configured(tmp_path, postgres_url: str) -> None:
    import psycopg2

    schema = f"fusionrec_test_{uuid.uuid4().hex[:8]}"
    url = postgres_url.replace("+psycopg2", "")
    admin = psycopg2.connect(url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE SCHEMA {schema}")
    try:
        cfg = RunConfig.from_env(home=tmp_path, events_url=f"{url}?options=-csearch_path%3D{schema}")
        with TestClient(create_app(cfg)) as client:
            event = {"event_type": "purchase", "user_id": "u1", "item_id": "i1", "order_value": 12.0}
            assert client.post("/events", json={"events": [event, event]}).json()["accepted"] == 2
        cursor = admin.cursor()
        cursor.execute(f"SELECT event_type, order_value FROM {schema}.feedback_events")
        assert cursor.fetchall() == [("purchase", 12.0), ("purchase", 12.0)]
        assert not (tmp_path / "events.db").exists()
    finally:
        admin.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


# ---- admin auth and operations -----------------------------------------------------------------------

ADMIN_CALLS = [
    ("post", "/admin/rollback"),
    ("post", "/admin/reload"),
    ("post", "/admin/promote"),
    ("get", "/admin/rules"),
    ("put", "/admin/rules"),
    ("get", "/admin/experiment"),
    ("put", "/admin/experiment"),
    ("delete", "/admin/experiment"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
def test_admin_endpoints_need_the_bearer_token(client: TestClient, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


def test_admin_is_disabled_without_a_configured_token(cfg: RunConfig, monkeypatch) -> None:
    monkeypatch.delenv("FUSIONREC_ADMIN_TOKEN")
    with TestClient(create_app(cfg)) as client:
        response = client.post("/admin/rollback", headers=AUTH)
    assert response.status_code == 403 and "FUSIONREC_ADMIN_TOKEN" in response.json()["detail"]


def test_admin_rollback_and_promote_a_kept_version(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg, "v1")
    publish(cfg, "v2")
    response = client.post("/admin/rollback", headers=AUTH)
    assert response.status_code == 200 and response.json()["live_version"] == "v1"
    assert response.json()["seconds"] < 1.0
    assert client.get("/recommendations/u1").json()["model_version"] == "v1"
    response = client.post("/admin/promote", json={"version": "v2"}, headers=AUTH)
    assert response.json()["live_version"] == "v2"
    assert client.post("/admin/promote", json={"version": "v9"}, headers=AUTH).status_code == 409


def test_rollback_with_nothing_to_return_to_is_a_409(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    response = client.post("/admin/rollback", headers=AUTH)
    assert response.status_code == 409 and "nothing to roll back to" in response.json()["detail"]


def test_promoting_without_a_champion_is_a_409(cfg: RunConfig, client: TestClient) -> None:
    response = client.post("/admin/promote", headers=AUTH)
    assert response.status_code == 409 and "champion" in response.json()["detail"]


# ---- experiments -------------------------------------------------------------------------------------


def start_experiment(client: TestClient, arms: list[dict], policy: str = "split") -> None:
    response = client.put(
        "/admin/experiment", json={"name": "exp1", "policy": policy, "arms": arms}, headers=AUTH
    )
    assert response.status_code == 200, response.text


def test_users_split_between_arms_deterministically(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    start_experiment(
        client,
        [{"name": "champion", "weight": 0.5}, {"name": "popularity", "weight": 0.5, "mode": "popular"}],
    )
    seen = {}
    for n in range(200):
        body = client.get(f"/recommendations/user{n}?k=1").json()
        assert body["experiment"] == "exp1"
        seen[n] = body["arm"]
        assert client.get(f"/recommendations/user{n}?k=1").json()["arm"] == body["arm"]  # sticky
    share = sum(arm == "champion" for arm in seen.values()) / len(seen)
    assert 0.4 < share < 0.6
    # the popularity arm serves popular items even to a user the model knows
    publish_known = [n for n, arm in seen.items() if arm == "popularity"][0]
    assert client.get(f"/recommendations/user{publish_known}?k=1").json()["cold_start"] is True


def test_an_arm_can_serve_the_previous_version(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg, "v1")
    publish(cfg, "v2")
    start_experiment(client, [{"name": "old", "weight": 1, "version": "previous"}])
    body = client.get("/recommendations/u1").json()
    assert (body["arm"], body["model_version"]) == ("old", "v1")
    assert client.delete("/admin/experiment", headers=AUTH).status_code == 204
    body = client.get("/recommendations/u1").json()
    assert (body["arm"], body["model_version"], body["experiment"]) == ("champion", "v2", None)


def test_thompson_sampling_shifts_traffic_to_the_arm_that_gets_clicks(
    cfg: RunConfig, client: TestClient
) -> None:
    publish(cfg)
    start_experiment(client, [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}], policy="thompson")
    events = []
    for n in range(200):
        events.append({"event_type": "impression", "user_id": f"s{n}", "item_id": "i1", "arm": "a"})
        events.append({"event_type": "impression", "user_id": f"s{n}", "item_id": "i1", "arm": "b"})
        if n % 2 == 0:
            events.append({"event_type": "click", "user_id": f"s{n}", "item_id": "i1", "arm": "b"})
    assert client.post("/events", json={"events": events}).status_code == 202
    arms = [client.get(f"/recommendations/t{n}?k=1").json()["arm"] for n in range(200)]
    assert arms.count("b") / len(arms) > 0.85


@pytest.mark.parametrize(
    "arms",
    [
        [{"name": "a", "weight": 0}],
        [{"name": "a"}, {"name": "a"}],
        [{"name": "a", "mode": "random"}],
        [],
    ],
)
def test_impossible_experiments_are_a_422(client: TestClient, arms: list[dict]) -> None:
    response = client.put("/admin/experiment", json={"name": "x", "arms": arms}, headers=AUTH)
    assert response.status_code == 422


# ---- metrics -----------------------------------------------------------------------------------------


def test_metrics_count_requests_by_arm_cold_starts_and_latency(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    client.get("/recommendations/u1")
    client.get("/recommendations/stranger")
    client.post("/events", json={"events": [{"event_type": "click", "user_id": "u1", "item_id": "i1"}]})
    text = client.get("/metrics").text
    assert 'fusionrec_requests_total{arm="champion",endpoint="recommendations",status="200"} 2.0' in text
    assert "fusionrec_cold_starts_total 1.0" in text
    assert 'fusionrec_request_latency_seconds_count{endpoint="recommendations"} 2.0' in text
    assert 'fusionrec_feedback_events_total{arm="",event_type="click"} 1.0' in text
    assert 'fusionrec_live_version_info{version="v1"} 1.0' in text
    assert 'fusionrec_cache_hits_total{cache="context"} 1.0' in text


def test_store_publish_keeps_the_context(cfg: RunConfig) -> None:
    publish(cfg)
    store = open_store(cfg)
    assert store.context("v1")["items"]["i4"] == ["Wool Hat", "hats", "acme", 20.0]
    store.close()


def test_metrics_count_errors_by_status(cfg: RunConfig, client: TestClient) -> None:
    assert client.get("/recommendations/u1").status_code == 503  # nothing promoted
    client.get("/recommendations/u1?k=0")
    text = client.get("/metrics").text
    assert 'fusionrec_requests_total{arm="",endpoint="recommendations",status="503"} 1.0' in text
    assert 'fusionrec_requests_total{arm="",endpoint="recommendations",status="422"} 1.0' in text


def test_a_popular_global_arm_serves_shop_wide_popularity(cfg: RunConfig, client: TestClient) -> None:
    publish(cfg)
    start_experiment(client, [{"name": "pop", "weight": 1, "mode": "popular_global"}])
    body = client.get("/recommendations/u1?k=3").json()
    assert (body["arm"], body["cold_start"]) == ("pop", True)
    assert [i["item_id"] for i in body["items"]] == ["i6", "i4", "i1"]
