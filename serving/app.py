"""The HTTP API: recommendations (filters, diversity, cold start, explanations, experiments), feedback
events, merchandising rules, admin operations, health and Prometheus metrics.

Run with ``serve(cfg)``, or ``uvicorn serving.app:app_from_env --factory`` (config from ``FUSIONREC_*``).
The recommendation handler is ``async`` and does its one store read inline: a sub-millisecond Redis/SQLite
read with a short timeout costs less than the thread-pool hop a plain ``def`` handler would add.
Answers are serialized once with orjson; the declared response models document the shape.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from fusionrec.config import RunConfig
from pipelines.privacy import stored_user_id
from serving.events import FeedbackEvent
from serving.experiments import ExperimentError
from serving.query import ID_PATTERN, QueryError, check_user_id, openapi_parameters, parse_query
from serving.rerank import CATEGORY, Filters, diversify, explanation, pin, select
from serving.rules import MerchRules, RulesError, as_dict, save_rules_file
from serving.state import ServingState, VersionContext
from serving.store import NoLiveVersionError, ServingStore, ServingStoreError, StoreUnavailableError

MAX_K = 100
MAX_EVENTS = 1000
DIVERSITY_POOL = 40  # candidates MMR chooses from (at least; 4 x k when more)
ADMIN_TOKEN_ENV = "FUSIONREC_ADMIN_TOKEN"
NO_MODEL_DETAIL = (
    "no model version has been promoted to the serving store yet; run the pipeline's promote step"
)
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)


# ---- response and request models -------------------------------------------------------------------


class ExplanationOut(BaseModel):
    kind: Literal["viewed", "similar", "popular", "pinned", "model"]
    text: str
    anchor_item: str | None


class RecommendationOut(BaseModel):
    item_id: str
    score: float
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    explanation: ExplanationOut | None = None


class AnswerOut(BaseModel):
    user_id: str
    items: list[RecommendationOut]
    model_version: str
    arm: str
    experiment: str | None
    cold_start: bool
    degraded: bool = Field(description="Answered by a fallback (store or feature store down)")
    request_id: str


class SimilarOut(BaseModel):
    item_id: str
    items: list[RecommendationOut]
    model_version: str


class HealthOut(BaseModel):
    status: Literal["ok", "no_model", "degraded"]
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
    degraded: bool = Field(default=False, description="The feature store is down or not built yet")
    detail: str = ""


class ErrorOut(BaseModel):
    detail: str


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_type: Literal["impression", "click", "cart", "purchase", "dismiss"]
    user_id: str = Field(pattern=ID_PATTERN)
    item_id: str = Field(pattern=ID_PATTERN)
    timestamp: datetime | None = Field(default=None, description="ISO 8601; default: now. Naive = UTC.")
    request_id: str | None = Field(default=None, max_length=64)
    arm: str | None = Field(default=None, max_length=64)
    model_version: str | None = Field(default=None, max_length=200)
    position: int | None = Field(default=None, ge=0, le=1000, strict=True)
    order_value: float | None = Field(default=None, ge=0, le=10_000_000, allow_inf_nan=False, strict=True)
    quantity: int | None = Field(default=None, ge=1, le=10_000, strict=True)
    event_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{8,64}$", description="For retries")

    @field_validator("timestamp")
    @classmethod
    def plausible_time(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        if not EARLIEST_EVENT <= value <= datetime.now(UTC) + timedelta(days=1):
            raise ValueError("timestamp must be between 2000-01-01 and tomorrow")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def purchase_has_value(self) -> EventIn:
        if self.event_type == "purchase" and self.order_value is None:
            raise ValueError("a purchase needs order_value")
        if self.event_type != "purchase" and self.order_value is not None:
            raise ValueError("order_value is only for purchases")
        return self


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsOut(BaseModel):
    received: int
    accepted: int = Field(description="New events (resent event_ids are ignored)")


class ArmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    weight: float = Field(default=1.0, ge=0, le=1000, allow_inf_nan=False, strict=True)
    version: str = Field(default="live", pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,199}$")
    mode: Literal["model", "popular", "popular_global"] = Field(
        default="model",
        description="model: the version's lists; popular: popular in the user's favourite categories (the "
        "cold-start policy); popular_global: shop-wide popularity",
    )


class ExperimentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    policy: Literal["split", "thompson"] = "split"
    arms: list[ArmIn] = Field(min_length=1, max_length=10)


class ActionOut(BaseModel):
    live_version: str | None
    seconds: float
    detail: str = ""


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(
        default=None, description="A kept serving version to make live; omit to promote the registry champion"
    )


# ---- the app -----------------------------------------------------------------------------------------


def create_app(cfg: RunConfig, store: ServingStore | None = None) -> FastAPI:
    """Build the API for ``cfg``'s serving store (or an already opened ``store``, which the app then owns)."""
    state = ServingState(cfg, store)
    admin_token = os.environ.get(ADMIN_TOKEN_ENV, "")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        _start(state)
        yield
        state.close()

    app = FastAPI(
        title="FusionRec serving API",
        version="2",
        description="Recommendations precomputed by the FusionRec pipeline and re-ranked per request "
        "(filters, merchandising rules, diversity), with feedback collection, A/B experiments and admin "
        f"operations (bearer token from ${ADMIN_TOKEN_ENV}).",
        lifespan=lifespan,
    )
    app.state.serving = state
    metrics = state.metrics
    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorOut, "description": "Body is not valid JSON"},
        422: {"model": ErrorOut, "description": "Invalid parameter or body (the detail says which)"},
    }

    def count_error(request: Request, status: int) -> None:
        metrics.requests.labels(_endpoint(request.url.path), "", str(status)).inc()

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        count_error(request, 422)
        return JSONResponse(status_code=422, content={"detail": _one_line(exc.errors())})

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette lists one route's methods; a path may have several routes
            methods = {
                m
                for r in app.routes
                if isinstance(r, APIRoute) and r.path_regex.match(request.url.path)
                for m in r.methods
            }
            headers["Allow"] = ", ".join(sorted(methods))
        count_error(request, exc.status_code)
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=headers)

    @app.exception_handler(StoreUnavailableError)
    def store_unavailable(request: Request, exc: StoreUnavailableError) -> JSONResponse:
        count_error(request, 503)
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if not admin_token:
            raise HTTPException(403, f"admin endpoints are disabled: set {ADMIN_TOKEN_ENV} on the server")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), admin_token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    admin = [Depends(require_admin)]
    admin_errors = {
        401: {"model": ErrorOut, "description": "Missing or wrong bearer token"},
        403: {"model": ErrorOut, "description": "Admin endpoints disabled (no token configured)"},
    }

    @app.get(
        "/recommendations/{user_id}",
        response_model=AnswerOut,
        responses={
            **errors,
            503: {"model": ErrorOut, "description": "No model version promoted yet"},
        },
        openapi_extra={"parameters": openapi_parameters()},
    )
    async def recommendations(request: Request) -> Response:
        """Top-``k`` for ``user_id`` from the arm the user is assigned to, filtered (category, price, in
        stock, already bought), ruled (pins, boosts, blocks), diversified (MMR) and explained."""
        start = time.perf_counter()
        try:
            user_id = check_user_id(request.path_params["user_id"])
            query = parse_query(request.query_params)
        except QueryError as exc:
            raise HTTPException(422, str(exc)) from exc
        state.refresh_settings()
        stored = state.stored_id(user_id)
        exclude = (
            state.exclusions.get(stored, ()) if query.exclude_purchased and not state.rules.repeats else ()
        )
        filters = Filters(query.categories, query.min_price, query.max_price, query.in_stock, exclude)
        body = _answer(state, user_id, stored, query.k, filters, query.diversity, query.explain)
        metrics.recommend_latency.observe(time.perf_counter() - start)
        return Response(content=body, media_type="application/json")

    # The documented FastAPI route above stays for the OpenAPI schema; requests go to this plain Starlette
    # route in front of it, which skips FastAPI's per-request dependency solving (the endpoint takes only the
    # request, so there is nothing to solve) — the largest fixed cost left on the hot path.
    app.router.routes.insert(0, Route("/recommendations/{user_id}", recommendations, methods=["GET"]))

    @app.get(
        "/items/{item_id}/similar",
        response_model=SimilarOut,
        responses={**errors, 404: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    )
    def similar(
        item_id: Annotated[str, Path(pattern=ID_PATTERN)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> SimilarOut:
        """Content neighbours (title, category, brand text) of a catalogue item, new items included."""
        ctx = _live_context(state)
        if item_id not in ctx.items:
            raise HTTPException(404, f"item {item_id!r} is not in the catalogue of version {ctx.version}")
        neighbours = ctx.neighbours.get(item_id, [])[:k]
        items = [
            _item_out([n, 1.0 / (rank + 1), item_id, ctx.items.get(n, [None] * 4)], ctx, True, True)
            for rank, n in enumerate(neighbours)
        ]
        return SimilarOut(item_id=item_id, items=items, model_version=ctx.version)

    @app.post(
        "/events",
        status_code=202,
        response_model=EventsOut,
        responses={**errors, 503: {"model": ErrorOut, "description": "Event store unreachable"}},
    )
    def events(batch: EventsIn) -> EventsOut:
        """Feedback (impression, click, cart, purchase with order value, dismiss); used by the next retrain."""
        now = datetime.now(UTC)
        converted = [
            FeedbackEvent(
                event_type=e.event_type,
                user_id=stored_user_id(e.user_id, cfg.pseudonymise),
                item_id=e.item_id,
                timestamp=e.timestamp or now,
                arm=e.arm,
                model_version=e.model_version,
                request_id=e.request_id,
                position=e.position,
                order_value=e.order_value,
                quantity=e.quantity,
                **({"event_id": e.event_id} if e.event_id else {}),
            )
            for e in batch.events
        ]
        try:
            accepted = state.events.add(converted)
        except Exception as exc:  # sqlite3 / psycopg2 errors: the client may retry with the same event_ids
            raise HTTPException(503, f"event store unavailable, retry later: {exc}".splitlines()[0]) from exc
        state.observe(converted)
        return EventsOut(received=len(converted), accepted=accepted)

    @app.get("/health", response_model=HealthOut)
    def health() -> HealthOut:
        """Liveness plus which version is live (``no_model`` before the first promote, ``degraded`` while the
        store is unreachable and answers come from the fallback)."""
        try:
            live = state._store_call(state.store.live_version)
        except StoreUnavailableError:
            ctx = state.degraded_context()
            return HealthOut(status="degraded", model_version=ctx and ctx.version, store=state.store.kind)
        return HealthOut(status="ok" if live else "no_model", model_version=live, store=state.store.kind)

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus_metrics() -> PlainTextResponse:
        """Prometheus text format: latency histograms, requests by arm, fallbacks, cache hits, feedback."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/users/{user_id}/features", response_model=UserFeaturesOut, responses=errors)
    def user_features(user_id: Annotated[str, Path(pattern=ID_PATTERN)]) -> UserFeaturesOut:
        """The user's profile as materialized in the Feast online store (all null for unknown users);
        ``degraded`` with the reason when the feature store is down or not built."""
        try:
            features = _online_features(cfg, app, user_id)
        except Exception as exc:  # Feast raises many kinds; the client gets one clear reason
            metrics.fallbacks.labels("feature_store_unavailable").inc()
            detail = f"feature store unavailable: {exc}".splitlines()[0]
            return UserFeaturesOut(user_id=user_id, known=False, features={}, degraded=True, detail=detail)
        return UserFeaturesOut(
            user_id=user_id, features=features, known=any(v is not None for v in features.values())
        )

    @app.get("/versions", response_model=list[VersionOut], responses={503: {"model": ErrorOut}})
    def versions() -> list[dict[str, Any]]:
        """Kept versions, newest first, with the live and previous (rollback target) flags."""
        return state.store.versions()

    # ---- admin -------------------------------------------------------------------------------------

    @app.post(
        "/admin/promote",
        response_model=ActionOut,
        dependencies=admin,
        responses={**admin_errors, **errors, 409: {"model": ErrorOut}},
    )
    def admin_promote(body: PromoteIn | None = None) -> ActionOut:
        """Make a kept version live, or (no version) promote the registry's champion as a new version."""
        start = time.perf_counter()
        try:
            if body is not None and body.version:
                state.store.activate(body.version)
            else:
                from pipelines.promote import PromotionError, promote

                try:
                    promote(cfg)
                except PromotionError as exc:
                    raise HTTPException(409, str(exc)) from exc
        except StoreUnavailableError:
            raise
        except ServingStoreError as exc:
            raise HTTPException(409, str(exc)) from exc
        state.reset_caches()
        return ActionOut(live_version=state.store.live_version(), seconds=_since(start))

    @app.post(
        "/admin/rollback", response_model=ActionOut, dependencies=admin, responses={**admin_errors, 409: {}}
    )
    def admin_rollback() -> ActionOut:
        """Switch back to the previous version (one atomic pointer swap)."""
        start = time.perf_counter()
        try:
            live = state.store.rollback()
        except StoreUnavailableError:
            raise
        except ServingStoreError as exc:
            raise HTTPException(409, str(exc)) from exc
        state.reset_caches()
        return ActionOut(live_version=live, seconds=_since(start))

    @app.post(
        "/admin/reload", response_model=ActionOut, dependencies=admin, responses={**admin_errors, 422: {}}
    )
    def admin_reload() -> ActionOut:
        """Re-read the rules file into the store, drop cached contexts, reload feedback exclusions."""
        start = time.perf_counter()
        try:
            state.load_rules_file()
        except RulesError as exc:
            raise HTTPException(422, str(exc)) from exc
        state.reset_caches()
        state.load_feedback()
        return ActionOut(live_version=state.store.live_version(), seconds=_since(start), detail="reloaded")

    @app.get("/admin/rules", response_model=MerchRules, dependencies=admin, responses=admin_errors)
    def get_rules() -> dict[str, Any]:
        state.refresh_settings(force=True)
        return as_dict(state.rules.rules)

    @app.put(
        "/admin/rules", response_model=MerchRules, dependencies=admin, responses={**admin_errors, **errors}
    )
    def put_rules(rules: MerchRules) -> dict[str, Any]:
        """Replace the merchandising rules (also written to the rules file); effective within a second."""
        state.put_rules(rules)
        save_rules_file(cfg.paths.merch_rules, rules)
        return as_dict(rules)

    @app.get(
        "/admin/experiment", response_model=ExperimentIn | None, dependencies=admin, responses=admin_errors
    )
    def get_experiment() -> dict[str, Any] | None:
        state.refresh_settings(force=True)
        return json.loads(state._experiment_raw) if state._experiment_raw else None

    @app.put(
        "/admin/experiment",
        response_model=ExperimentIn,
        dependencies=admin,
        responses={**admin_errors, **errors},
    )
    def put_experiment(experiment: ExperimentIn) -> dict[str, Any]:
        """Start (or replace) the A/B experiment: arms, weights, ``split`` or ``thompson`` policy."""
        raw = experiment.model_dump()
        try:
            state.put_experiment(raw)
        except ExperimentError as exc:
            raise HTTPException(422, str(exc)) from exc
        return raw

    @app.delete("/admin/experiment", status_code=204, dependencies=admin, responses=admin_errors)
    def stop_experiment() -> Response:
        """Stop the experiment: everyone gets the live version again."""
        state.put_experiment(None)
        return Response(status_code=204)

    return app


# ---- request work --------------------------------------------------------------------------------


def _answer(
    state: ServingState,
    user_id: str,
    stored: str,
    k: int,
    filters: Filters,
    diversity: float,
    explain: bool,
) -> bytes:
    """The JSON answer: candidates of the user's arm, filtered, ruled, diversified and explained."""
    metrics = state.metrics
    degraded = False
    choice = state.choose_arm(stored)
    try:
        found = state.candidates(stored, choice.version)
        ctx = state.context(found.version)
        cold = found.cold_start or choice.popular is not None
        if choice.popular == "popular_global":
            candidates = [[e[0], e[1], None] for e in ctx.popular]
        elif cold:
            candidates, degraded = _cold_candidates(state, stored, ctx, filters)
        else:
            candidates = orjson.loads(found.payload)
    except NoLiveVersionError as exc:
        raise HTTPException(503, NO_MODEL_DETAIL) from exc
    except StoreUnavailableError:
        ctx = state.degraded_context()
        if ctx is None:
            raise
        metrics.fallbacks.labels("store_unavailable").inc()
        cold = True
        candidates, _ = _cold_candidates(state, stored, ctx, filters)
        degraded = True
    arm = choice.arm
    if cold:
        metrics.cold_starts.inc()
    metrics.saw_version(ctx.version)
    # diversity needs a pool to choose from; pins may push survivors down
    limit = (max(4 * k, DIVERSITY_POOL) if diversity > 0 else k) + len(state.rules.pins)
    ranked = select(candidates, state.item_view(ctx), filters, state.rules, limit)
    ranked = diversify(ranked, k, diversity) if diversity > 0 else ranked[:k]
    ranked = pin(ranked, state.rules, ctx.items, k)
    items = [_item_dict(e, ctx, cold, explain) for e in ranked]
    metrics.requests.labels("recommendations", arm, "200").inc()
    return orjson.dumps(
        {
            "user_id": user_id,
            "items": items,
            "model_version": ctx.version,
            "arm": arm,
            "experiment": choice.experiment,
            "cold_start": cold,
            "degraded": degraded,
            "request_id": os.urandom(16).hex(),
        },
    )


def _cold_candidates(
    state: ServingState, stored: str, ctx: VersionContext, filters: Filters
) -> tuple[list[list[Any]], bool]:
    """A new user's list: content neighbours of what they just clicked, then what is popular in the requested
    categories, else in their favourite categories (Feast profile), else overall. Also says whether the
    feature store was down (the answer then falls back to overall popularity)."""
    out: list[list[Any]] = []
    seen: set[str] = set()
    top = ctx.popular[0][1] if ctx.popular else 1.0
    for anchor in state.recent.get(stored, ()):
        for rank, item in enumerate(ctx.neighbours.get(anchor, ())):
            if item not in seen:
                out.append([item, top * 2 / (rank + 2), anchor])
                seen.add(item)
    categories, degraded = sorted(filters.categories), False
    if not categories and not out:
        categories, degraded = state.favourite_categories(stored)
    pools = [ctx.popular_by_category.get(c, []) for c in categories] + [ctx.popular]
    for pool in pools:
        for entry in pool:
            if entry[0] not in seen:
                out.append([entry[0], entry[1], None])
                seen.add(entry[0])
    return out, degraded


def _item_dict(entry: list[Any], ctx: VersionContext, cold: bool, explain: bool) -> dict[str, Any]:
    attrs = entry[3]
    out = {"item_id": entry[0], "score": round(entry[1], 6), "category": attrs[CATEGORY]}
    out["brand"], out["price"] = attrs[2], attrs[3]
    if explain:
        out["explanation"] = explanation(entry, ctx.items, cold, ctx.popular_items)
    return out


def _item_out(entry: list[Any], ctx: VersionContext, cold: bool, explain: bool) -> RecommendationOut:
    return RecommendationOut.model_validate(_item_dict(entry, ctx, cold, explain))


def _live_context(state: ServingState) -> VersionContext:
    try:
        live = state._store_call(state.store.live_version)
    except StoreUnavailableError:
        ctx = state.degraded_context()
        if ctx is None:
            raise
        return ctx
    if live is None:
        raise HTTPException(503, NO_MODEL_DETAIL)
    return state.context(live)


def _start(state: ServingState) -> None:
    """At start-up: push the rules file to the store if it exists, read settings and past feedback."""
    try:
        if state.cfg.paths.merch_rules.exists():
            state.load_rules_file()
        state.refresh_settings(force=True)
        state.load_feedback()
    except (ServingStoreError, RulesError, ExperimentError, OSError) as exc:
        import logging

        logging.getLogger(__name__).warning("serving start-up: %s (continuing)", exc)


def _endpoint(path: str) -> str:
    """The metric label of a path: its first segment ("recommendations", "events", "admin", ...)."""
    return path.strip("/").split("/", 1)[0] or "root"


def _one_line(errors: Any) -> str:
    """FastAPI's validation errors as one readable line: where, then what."""
    parts = []
    for error in errors[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 6)


def _online_features(cfg: RunConfig, app: FastAPI, user_id: str) -> dict[str, Any]:
    """Feast ``get_online_features`` for one user; the FeatureStore is opened once, on first use."""
    if not (cfg.paths.features / "registry.db").exists():
        raise RuntimeError(f"no feature registry at {cfg.paths.features}; run the features stage")
    from pipelines.features import feature_store, online_user_features

    if getattr(app.state, "feature_store", None) is None:
        app.state.feature_store = feature_store(cfg)
    stored = stored_user_id(user_id, cfg.pseudonymise)
    features = online_user_features(cfg, [stored], store=app.state.feature_store)[stored]
    # JSON has no NaN: a missing numeric feature (e.g. mean rating without ratings) is null
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in features.items()}


def recommend_once(cfg: RunConfig, user_id: str, k: int = 10) -> dict[str, Any]:
    """The API's answer for ``user_id`` with default parameters, without a server (the CLI's ``recommend``)."""
    state = ServingState(cfg)
    try:
        _start(state)
        stored = state.stored_id(user_id)
        exclude = () if state.rules.repeats else state.exclusions.get(stored, ())
        return orjson.loads(_answer(state, user_id, stored, k, Filters(exclude=exclude), 0.0, True))
    finally:
        state.close()


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: the app for ``RunConfig.from_env()``."""
    return create_app(RunConfig.from_env())


def serve(cfg: RunConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(cfg), host=host, port=port, log_level="info", access_log=False)
