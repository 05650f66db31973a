"""The FastAPI application: Mida-compatible read API, health, metrics, OpenAPI.

Stateless apart from in-process caches that Redis validates (rendered results, parsed
snapshots and definitions) or that expire within seconds (API keys, computed results):
any number of processes and replicas can serve behind a load balancer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from worker.api import system_routes
from worker.api.caching.api_keys import KeyCache
from worker.api.caching.middleware import CachedResultsMiddleware
from worker.api.caching.responses import ResponseCache
from worker.api.caching.results import ResultSource
from worker.api.context import ApiContext
from worker.api.detached_tasks import DetachedTasks
from worker.api.errors import install_error_handlers
from worker.api.kameleoon import routes as kameleoon_routes
from worker.api.metrics import MetricsMiddleware, RequestMetrics
from worker.api.mida import routes as mida_routes
from worker.api.publishing import DefinitionPublisher
from worker.api.scans import ScanLimiter
from worker.api.ui import routes as ui_routes
from worker.api.ui.headers import SecurityHeadersMiddleware, headers_for
from worker.api.vendors import experiments_api, launchdarkly, posthog
from worker.config import Settings
from worker.store.connection import connect

SHUTDOWN_GRACE_SECONDS = 10.0
"""How long shutdown waits for computations requests left running (Kameleoon's data
codes) before it cancels them."""

ROUTERS: tuple[APIRouter, ...] = (
    mida_routes.router,
    kameleoon_routes.router,
    experiments_api.router,
    posthog.router,
    launchdarkly.router,
    system_routes.router,
    ui_routes.router,
)
"""The route table: every family's routes, in the order they are matched."""


def create_app(settings: Settings) -> FastAPI:
    """A new app reading the Redis of ``settings``; at shutdown the computations its
    requests left running are drained, then its scan processes stop and its client
    closes."""
    redis = connect(settings)
    metrics = RequestMetrics()
    scans = ScanLimiter(settings.api_max_scans, settings.api_scan_wait_seconds, metrics.registry)
    results = ResultSource(redis, settings, scans)
    context = ApiContext(
        settings=settings,
        redis=redis,
        results=results,
        metrics=metrics,
        keys=KeyCache(redis, settings.key_prefix, settings.api_key_cache_seconds),
        responses=ResponseCache(redis, settings.key_prefix, results),
        detached=DetachedTasks(),
        publisher=DefinitionPublisher(settings, redis),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Before the client closes: the tasks write their outcome to Redis with it.
        await context.detached.drain(SHUTDOWN_GRACE_SECONDS)
        results.close()
        await context.publisher.close()
        await redis.aclose()

    app = FastAPI(
        title="ab-results-worker read API",
        version="1",
        description="Experiment results in the shapes of Mida's public API v2. "
        "Authenticate with `Authorization: Bearer <key>` or `x-api-key: <key>`; "
        "keys are created with `python -m worker keys create --project KEY [--scope ...]` "
        "(experiment:read by default; experiment:write for writes and shares).",
        lifespan=lifespan,
    )
    app.state.context = context
    install_error_handlers(app, headers_for_path=headers_for)
    for router in ROUTERS:
        app.include_router(router)
    # Around the routes and the error handlers: an error under /ui carries them too.
    app.add_middleware(SecurityHeadersMiddleware)
    # Added last is outermost: metrics also count the answers of the cached layer.
    app.add_middleware(
        CachedResultsMiddleware,
        keys=context.keys,
        responses=context.responses,
        route=_route_of(mida_routes.router, mida_routes.get_result),
    )
    app.add_middleware(MetricsMiddleware, metrics=context.metrics)
    app.openapi = lambda: _openapi_without_422(app)  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """The app of the environment's settings (uvicorn's factory with several workers)."""
    return create_app(Settings.from_env())


def _route_of(router: APIRouter, endpoint: Callable[..., Any]) -> APIRoute:
    """The route of ``router`` that ``endpoint`` serves."""
    return next(
        route
        for route in router.routes
        if isinstance(route, APIRoute) and route.endpoint is endpoint
    )


def _openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents a 422 for every route with parameters; this API answers 400
    instead (errors.py), so the document says so."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for operations in document["paths"].values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        schemas = document.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = document
    return app.openapi_schema
