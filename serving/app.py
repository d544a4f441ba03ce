"""HTTP API over the serving store: precomputed top-k per user, a fallback for unknown users, health.

Run with ``serve(cfg)``, or ``uvicorn serving.app:app_from_env --factory`` (config from ``FUSIONREC_*``).
Handlers are plain ``def`` because the store calls block; FastAPI runs them in its thread pool.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from fusionrec.config import RunConfig
from pipelines.privacy import stored_user_id
from serving.store import NoLiveVersionError, ServingStore, StoreUnavailableError, open_store

MAX_K = 100
NO_MODEL_DETAIL = (
    "no model version has been promoted to the serving store yet; run the pipeline's promote step"
)


class RecommendationOut(BaseModel):
    item_id: str
    score: float


class AnswerOut(BaseModel):
    user_id: str
    items: list[RecommendationOut]
    model_version: str
    cold_start: bool


class HealthOut(BaseModel):
    status: Literal["ok", "no_model"]
    model_version: str | None
    store: str


class VersionOut(BaseModel):
    version: str
    created_at: str
    meta: dict[str, Any]
    n_users: int
    live: bool
    previous: bool


class UserFeaturesOut(BaseModel):
    user_id: str
    known: bool
    features: dict[str, Any]


class ErrorOut(BaseModel):
    detail: str


def create_app(cfg: RunConfig, store: ServingStore | None = None) -> FastAPI:
    """Build the API for ``cfg``'s serving store (or an already opened ``store``, which the app then owns)."""
    store = store or open_store(cfg)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="FusionRec serving API",
        version="1",
        description="Top-k recommendations precomputed by the FusionRec pipeline, served from a versioned store.",
        lifespan=lifespan,
    )
    app.state.store = store

    @app.exception_handler(StoreUnavailableError)
    def store_unavailable(_: Request, exc: StoreUnavailableError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.get(
        "/recommendations/{user_id}",
        response_model=AnswerOut,
        responses={503: {"model": ErrorOut, "description": "No model version promoted yet, or store down"}},
    )
    def recommendations(
        user_id: Annotated[str, Path(min_length=1, max_length=256)],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items to return")] = 10,
    ) -> AnswerOut:
        """The live version's top-``k`` for ``user_id``; unknown users get the popularity fallback."""
        try:
            answer = store.recommend(stored_user_id(user_id, cfg.pseudonymise), k)
        except NoLiveVersionError as exc:
            raise HTTPException(status_code=503, detail=NO_MODEL_DETAIL) from exc
        return AnswerOut.model_validate(answer, from_attributes=True).model_copy(update={"user_id": user_id})

    @app.get(
        "/health",
        response_model=HealthOut,
        responses={503: {"model": ErrorOut, "description": "Serving store unreachable"}},
    )
    def health() -> HealthOut:
        """Liveness plus which model version is live (``no_model`` before the first promote)."""
        live = store.live_version()
        return HealthOut(status="ok" if live else "no_model", model_version=live, store=store.kind)

    @app.get(
        "/users/{user_id}/features",
        response_model=UserFeaturesOut,
        responses={503: {"model": ErrorOut, "description": "Feature store not built or unreachable"}},
    )
    def user_features(user_id: Annotated[str, Path(min_length=1, max_length=256)]) -> UserFeaturesOut:
        """The user's profile as materialized in the Feast online store (all null for unknown users)."""
        try:
            features = _online_features(cfg, app, user_id)
        except Exception as exc:  # Feast raises many kinds; the client gets one clear 503
            raise HTTPException(status_code=503, detail=f"feature store unavailable: {exc}") from exc
        return UserFeaturesOut(
            user_id=user_id, features=features, known=any(v is not None for v in features.values())
        )

    @app.get("/versions", response_model=list[VersionOut])
    def versions() -> list[dict[str, Any]]:
        """Kept versions, newest first, with the live and previous (rollback target) flags."""
        return store.versions()

    return app


def _online_features(cfg: RunConfig, app: FastAPI, user_id: str) -> dict[str, Any]:
    """Feast ``get_online_features`` for one user; the FeatureStore is opened once, on first use."""
    from pipelines.features import feature_store, online_user_features

    if not (cfg.paths.features / "registry.db").exists():
        raise RuntimeError(f"no feature registry at {cfg.paths.features}; run the features stage")
    if getattr(app.state, "feature_store", None) is None:
        app.state.feature_store = feature_store(cfg)
    stored = stored_user_id(user_id, cfg.pseudonymise)
    features = online_user_features(cfg, [stored], store=app.state.feature_store)[stored]
    # JSON has no NaN: a missing numeric feature (e.g. mean rating without ratings) is null
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in features.items()}


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: the app for ``RunConfig.from_env()``."""
    return create_app(RunConfig.from_env())


def serve(cfg: RunConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(cfg), host=host, port=port, log_level="info")
