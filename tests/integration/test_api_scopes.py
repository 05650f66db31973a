"""Key scopes against real Redis: every authenticated route of every family checks the
scope it needs, and answers a key without it 403 in its family's error shape."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from fastapi.routing import APIRoute
from redis.asyncio import Redis

from tests.dataset import experiment_definitions
from tests.integration.harness import Namespace
from worker.api.app import ROUTERS, create_app
from worker.store import keys
from worker.store.api_keys import (
    EXPERIMENT_READ,
    EXPERIMENT_WRITE,
    FEATURE_FLAG_READ,
    create_key,
    key_hash,
)

pytestmark = pytest.mark.integration

READ, WRITE, FLAGS = EXPERIMENT_READ, EXPERIMENT_WRITE, FEATURE_FLAG_READ
LD = "/api/v2/projects/shop/environments/production/experiments/exp-a"
POSTHOG = "/api/projects/shop/experiments/exp-a/timeseries_results?metric_uuid=signup"
MIDA = "/v2/project/shop/experiment/exp-a"


def launchdarkly(body: dict[str, Any], scope: str) -> bool:
    return body == {"code": "forbidden", "message": body["message"]} and scope in body["message"]


def posthog(body: dict[str, Any], scope: str) -> bool:
    return body == {
        "type": "authentication_error",
        "code": "permission_denied",
        "detail": f"API key missing required scope '{scope}'",
        "attr": None,
    }


def ours(body: dict[str, Any], scope: str) -> bool:
    return list(body) == ["error"] and scope in body["error"]


Shape = Callable[[dict[str, Any], str], bool]

# (method, path, body, scope, 403 shape): the path is a concrete one of the route. With
# the scope, each request is allowed and changes nothing that publishes (its body is
# invalid or its experiment in a state that refuses it).
ROUTES: list[tuple[str, str, Any, str, Shape | None]] = [
    ("GET", "/v2/project/shop/experiments", None, READ, ours),
    ("GET", MIDA, None, READ, ours),
    ("GET", MIDA + "/result", None, READ, ours),
    ("GET", MIDA + "/metrics", None, READ, ours),
    ("GET", MIDA + "/timeseries", None, READ, ours),
    ("GET", MIDA + "/distribution", None, READ, ours),
    ("GET", MIDA + "/share-link", None, READ, ours),
    ("POST", MIDA + "/share-link", None, WRITE, ours),
    ("DELETE", MIDA + "/share-link", None, WRITE, ours),
    ("POST", "/experiments/exp-a/results", {}, READ, ours),
    ("POST", "/feature-flags/exp-a/results", {}, READ, ours),
    ("GET", "/results?dataCode=unknown", None, READ, ours),
    ("POST", "/experiments/exp-a/share", None, WRITE, ours),
    ("DELETE", "/experiments/exp-a/share", None, WRITE, ours),
    ("GET", "/api/experiments", None, READ, ours),
    ("GET", "/api/experiments/exp-a", None, READ, ours),
    ("GET", "/api/experiments/exp-a/results", None, READ, ours),
    ("POST", "/api/experiments/exp-a/compute-results", None, READ, ours),
    ("POST", "/api/experiments", {}, WRITE, ours),
    ("PATCH", "/api/experiments/exp-a", {}, WRITE, ours),
    ("DELETE", "/api/experiments/exp-done", None, WRITE, ours),
    ("POST", "/api/experiments/exp-a/start", None, WRITE, ours),
    ("POST", "/api/experiments/exp-draft/stop", None, WRITE, ours),
    ("GET", POSTHOG, None, READ, posthog),
    ("POST", "/api/projects/shop/experiments/missing/duplicate", None, WRITE, posthog),
    ("GET", "/api/projects/shop/experiments/eligible_feature_flags", None, FLAGS, posthog),
    ("GET", "/api/projects/shop/experiments/requires_flag_implementation", None, READ, posthog),
    ("GET", "/api/projects/shop/experiments/stats", None, READ, posthog),
    ("POST", "/api/projects/shop/experiments/exp-a/recalculate_timeseries", {}, WRITE, posthog),
    ("GET", LD, None, READ, launchdarkly),
    ("POST", LD.removesuffix("/exp-a"), {}, WRITE, launchdarkly),
    ("POST", LD + "/iterations", {}, WRITE, launchdarkly),
    ("PATCH", LD, {}, WRITE, launchdarkly),
    ("GET", "/ui/experiments", None, READ, None),
    ("GET", "/ui/experiments/exp-a", None, READ, None),
    ("GET", "/ui/experiments/exp-a/stamp", None, READ, None),
]
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v2/share/{token}"),
    ("GET", "/ui/share/{token}"),
    ("GET", "/ui/share/{token}/stamp"),
    ("GET", "/ui/static/{name}"),
    ("GET", "/ui/{path:path}"),  # any other /ui address: the 404 page, which shows nothing
}


def route_of(app_routes: list[APIRoute], method: str, path: str) -> tuple[str, str]:
    """The (method, template) of the route serving ``path``."""
    bare = path.split("?")[0]
    for route in app_routes:
        if method in (route.methods or ()) and route.path_regex.match(bare):
            return method, route.path
    raise AssertionError(f"no route serves {method} {path}")


def test_the_table_covers_every_route() -> None:
    routes = [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]
    every = {(method, route.path) for route in routes for method in route.methods or ()}
    tabled = {route_of(routes, method, path) for method, path, *_ in ROUTES}
    assert every - PUBLIC == tabled


@pytest.fixture
async def client(namespace: Namespace) -> AsyncIterator[httpx.AsyncClient]:
    settings = namespace.settings
    async with Redis.from_url(settings.redis_url) as redis:
        for definition in experiment_definitions():
            await redis.hset(
                keys.experiments_key(settings.key_prefix), definition["id"], json.dumps(definition)
            )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        yield http
    await app.state.context.publisher.close()
    await app.state.context.redis.aclose()


async def key_with(namespace: Namespace, *scopes: str) -> str:
    async with Redis.from_url(namespace.settings.redis_url) as redis:
        key, _ = await create_key(redis, namespace.settings.key_prefix, "shop", scopes)
    return key


async def test_every_route_checks_its_scope(
    client: httpx.AsyncClient, namespace: Namespace
) -> None:
    only = {scope: await key_with(namespace, scope) for scope in (READ, WRITE, FLAGS)}
    everything = await key_with(namespace, READ, WRITE, FLAGS)
    for method, path, body, scope, shape in ROUTES:
        others = [key for granted, key in only.items() if granted != scope]
        # Twice without the scope: the second time the key and the answer are cached.
        for key in [*others, only[scope], everything, *others]:
            response = await client.request(method, path, json=body, headers={"x-api-key": key})
            allowed = key in (only[scope], everything)
            assert (response.status_code == 403) is not allowed, (method, path, response.text)
            assert response.status_code != 401, (method, path)
            if not allowed and shape is not None:
                assert shape(response.json(), scope), (method, path, response.json())
            if not allowed and shape is None:
                assert scope in response.text


async def test_a_key_stored_before_scopes_keeps_read_access_only(
    client: httpx.AsyncClient, namespace: Namespace
) -> None:
    legacy = "abk_stored-before-keys-had-scopes"
    record = {
        "id": "0123456789ab",
        "project_key": "shop",
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    async with Redis.from_url(namespace.settings.redis_url) as redis:
        await redis.hset(
            keys.api_keys_key(namespace.settings.key_prefix),
            key_hash(legacy),
            orjson.dumps(record),
        )
    for method, path, body, scope, _ in ROUTES:
        response = await client.request(method, path, json=body, headers={"x-api-key": legacy})
        assert (response.status_code == 403) is (scope != READ), (method, path, response.text)


def test_keys_are_created_with_the_scopes_asked_for(namespace: Namespace) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker", "keys", *args],
            env={**os.environ, **namespace.env},
            capture_output=True,
            text=True,
            check=False,
        )

    created = cli("create", "--project", "shop", "--scope", f"{READ},{WRITE},{FLAGS}")
    assert created.returncode == 0, created.stderr
    assert f"with scopes {READ},{WRITE},{FLAGS}" in created.stderr
    assert cli("create", "--project", "shop").returncode == 0
    listed = [line.split()[2] for line in cli("list", "--project", "shop").stdout.splitlines()]
    assert sorted(listed) == sorted([f"{READ},{WRITE},{FLAGS}", READ])
    refused = cli("create", "--project", "shop", "--scope", "experiment:admin")
    assert refused.returncode == 2
    assert "Scope experiment:admin is unknown" in refused.stderr

    async def records() -> list[dict[str, Any]]:
        async with Redis.from_url(namespace.settings.redis_url) as redis:
            stored = await redis.hvals(keys.api_keys_key(namespace.settings.key_prefix))
        return [orjson.loads(raw) for raw in stored]

    assert sorted(tuple(r["scopes"]) for r in asyncio.run(records())) == sorted(
        [(READ, WRITE, FLAGS), (READ,)]
    )
