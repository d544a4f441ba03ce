"""The thin baseline app of `fusionrec bench serve`: one Redis GET, returned byte for byte."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from serving.baseline import baseline_key, create_baseline_app


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"fusionrec-bench-test:{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=name + ":*"))
    if keys:
        client.unlink(*keys)


@pytest.mark.parametrize("variant", ["async", "sync"])
def test_returns_the_stored_bytes_and_404_for_unknown_users(
    redis_url: str, prefix: str, variant: str
) -> None:
    payload = b'{"user_id":"u1","items":[{"item_id":"i1","score":0.5}]}'
    redis.Redis.from_url(redis_url).set(baseline_key(prefix, "u1"), payload)
    with TestClient(create_baseline_app(redis_url, prefix, variant)) as client:  # type: ignore[arg-type]
        found = client.get("/top/u1")
        assert found.status_code == 200
        assert found.content == payload
        assert found.headers["content-type"] == "application/json"
        assert client.get("/top/nobody").status_code == 404


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown baseline client"):
        create_baseline_app("redis://127.0.0.1:6379/0", "p", "threads")  # type: ignore[arg-type]
