"""The thinnest possible serving endpoint, the yardstick of `fusionrec bench serve`.

One route, ``GET /top/{user_id}``: one Redis GET of a pre-serialized top-100 JSON list, returned as is. No
validation, no hashing, no filtering, no serialization: whatever latency it has is the floor that FastAPI +
uvicorn + one Redis round trip put under any endpoint of this stack.

Two variants of the Redis call, picked by ``client``: ``"async"`` awaits ``redis.asyncio``; ``"sync"`` calls
blocking redis-py inside the ``async def`` (no thread-pool hop; on loopback the GET is shorter than the
``await`` machinery). The benchmark measures both and compares against the faster.

Run with ``uvicorn serving.baseline:baseline_app_from_env --factory`` and ``FUSIONREC_REDIS_URL``,
``FUSIONREC_BASELINE_PREFIX`` (keys are ``<prefix>:top:<user_id>``), ``FUSIONREC_BASELINE_CLIENT``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Response

BaselineClient = Literal["async", "sync"]
BASELINE_CLIENTS: tuple[BaselineClient, ...] = ("async", "sync")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def baseline_key(prefix: str, user_id: str) -> str:
    """The Redis key holding ``user_id``'s pre-serialized list."""
    return f"{prefix}:top:{user_id}"


def create_baseline_app(redis_url: str, prefix: str, client: BaselineClient = "async") -> FastAPI:
    """The one-route app reading ``<prefix>:top:<user_id>`` with the ``client`` variant of redis-py."""
    if client not in BASELINE_CLIENTS:
        raise ValueError(f"unknown baseline client {client!r}; expected one of {BASELINE_CLIENTS}")
    app = FastAPI(title="FusionRec thin baseline", docs_url=None, redoc_url=None, openapi_url=None)
    key_prefix = baseline_key(prefix, "")

    if client == "async":
        import redis.asyncio as aioredis

        aio = aioredis.Redis.from_url(redis_url)

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            yield
            await aio.aclose()

        app.router.lifespan_context = lifespan

        @app.get("/top/{user_id}")
        async def top_async(user_id: str) -> Response:
            payload = await aio.get(key_prefix + user_id)
            if payload is None:
                return Response(status_code=404)
            return Response(content=payload, media_type="application/json")

    else:
        import redis

        blocking = redis.Redis.from_url(redis_url)

        @app.get("/top/{user_id}")
        async def top_sync(user_id: str) -> Response:
            payload = blocking.get(key_prefix + user_id)
            if payload is None:
                return Response(status_code=404)
            return Response(content=payload, media_type="application/json")

    return app


def baseline_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from the environment (see the module docstring)."""
    client = os.environ.get("FUSIONREC_BASELINE_CLIENT", "async")
    return create_baseline_app(
        os.environ.get("FUSIONREC_REDIS_URL", DEFAULT_REDIS_URL),
        os.environ["FUSIONREC_BASELINE_PREFIX"],
        client,  # type: ignore[arg-type]  # checked by create_baseline_app
    )
