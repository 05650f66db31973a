"""The read API's caches never serve an answer that is no longer the answer.

Rendered results (``worker/api/caching/responses.py``) are checked against Redis on every
request, so a new snapshot or definition shows at once; API keys are remembered for
``AB_API_KEY_CACHE_SECONDS``, so a revoked key stops working within that time; and
entries are per project and query string. Definitions and snapshots are written to
Redis directly: no worker is needed to test the API's side.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.integration.harness import Namespace, store_as_snapshot
from tests.integration.services import Endpoints
from worker.api.app import create_app
from worker.api.caching import api_keys as api_keys_cache
from worker.api.mida import routes as mida_routes
from worker.events.experiment import ExperimentDefinition
from worker.results.experiment_result import result_document
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals
from worker.store import keys
from worker.store.api_keys import create_key, revoke_key
from worker.store.keys import api_keys_key, snapshot_key

pytestmark = pytest.mark.integration

KEY_CACHE_SECONDS = 2.0
PATH = "/v2/project/shop/experiment/cached/result"


def definition(project: str, experiment_id: str, name: str = "Cached") -> ExperimentDefinition:
    return ExperimentDefinition.model_validate(
        {
            "id": experiment_id,
            "project_key": project,
            "name": name,
            "status": "live",
            "variants": [
                {"id": "0", "name": "A", "is_control": True},
                {"id": "1", "name": "B"},
            ],
            "goals": [
                {"key": "signup", "name": "Signup", "primary": True},
                {"key": "click", "name": "Click", "type": "count"},
            ],
        }
    )


@pytest.fixture
async def redis(endpoints: Endpoints) -> AsyncIterator[tuple[Redis, Namespace]]:
    namespace = Namespace.create(endpoints, f"t{uuid.uuid4().hex[:10]}")
    client = Redis.from_url(namespace.settings.redis_url)
    for stored in (definition("shop", "cached"), definition("rival", "theirs")):
        await store_definition(client, namespace, stored)
    yield client, namespace
    # The keys these tests write (a SCAN would walk every key of the shared Redis).
    await client.delete(
        keys.experiments_key(namespace.name),
        snapshot_key(namespace.name, "cached"),
        api_keys_key(namespace.name),
    )
    await client.aclose()


@pytest.fixture
async def api(redis: tuple[Redis, Namespace]) -> AsyncIterator[httpx.AsyncClient]:
    _, namespace = redis
    settings = dataclasses.replace(namespace.settings, api_key_cache_seconds=KEY_CACHE_SECONDS)
    app = create_app(settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api.test"
    ) as client:
        yield client
    await app.state.context.redis.aclose()


async def store_definition(
    redis: Redis, namespace: Namespace, stored: ExperimentDefinition
) -> None:
    await redis.hset(keys.experiments_key(namespace.name), stored.id, stored.model_dump_json())


async def store_snapshot(redis: Redis, namespace: Namespace, visitors: tuple[int, int]) -> None:
    rows = [
        VariantTotals("0", visitors=visitors[0], conversions=4),
        VariantTotals("1", visitors=visitors[1], conversions=9),
    ]
    stored = definition("shop", "cached")
    document = result_document(stored, {goal.key: QueryTotals(rows) for goal in stored.goals})
    await store_as_snapshot(redis, namespace.name, document)


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Goal keys of the answers the FastAPI route rendered (cached answers are not)."""
    rendered: list[str] = []
    original = mida_routes.result_response

    def counting(*args: Any, **kwargs: Any) -> Any:
        rendered.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(mida_routes, "result_response", counting)
    return rendered


def visitors(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [variant["visitors"] for variant in response.json()["variants"]]


async def test_a_new_snapshot_is_served_from_the_next_request(
    redis: tuple[Redis, Namespace], api: httpx.AsyncClient, renders: list[str]
) -> None:
    client, namespace = redis
    key, _ = await create_key(client, namespace.name, "shop")
    auth = {"Authorization": f"Bearer {key}"}
    await store_snapshot(client, namespace, (40, 60))
    first = await api.get(PATH, headers=auth)
    again = await api.get(PATH, headers=auth)
    assert visitors(first) == visitors(again) == [40, 60]
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert len(renders) == 1, "the repeated question was answered from the cache"

    await store_snapshot(client, namespace, (41, 61))
    assert visitors(await api.get(PATH, headers=auth)) == [41, 61]
    # The worker deleting the snapshot: the answer is computed (no traffic here).
    await client.delete(snapshot_key(namespace.name, "cached"))
    assert visitors(await api.get(PATH, headers=auth)) == [0, 0]


async def test_a_changed_definition_is_served_from_the_next_request(
    redis: tuple[Redis, Namespace], api: httpx.AsyncClient
) -> None:
    client, namespace = redis
    key, _ = await create_key(client, namespace.name, "shop")
    auth = {"x-api-key": key}
    await store_snapshot(client, namespace, (40, 60))
    for _ in range(2):
        assert (await api.get(PATH, headers=auth)).json()["test_name"] == "Cached"
    await store_definition(client, namespace, definition("shop", "cached", name="Renamed"))
    assert (await api.get(PATH, headers=auth)).json()["test_name"] == "Renamed"
    # Moved to another project: the shop key no longer reaches it, cached or not.
    await store_definition(client, namespace, definition("rival", "cached"))
    assert (await api.get(PATH, headers=auth)).status_code == 404


async def test_a_revoked_key_is_refused_within_the_key_cache_time(
    redis: tuple[Redis, Namespace], api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key cache's own clock, moved by hand: a loaded machine's pauses cannot carry
    # the requests past the cache time, nor does the test wait it out.
    now = [1000.0]
    monkeypatch.setattr(api_keys_cache, "time", SimpleNamespace(monotonic=lambda: now[0]))
    client, namespace = redis
    key, record = await create_key(client, namespace.name, "shop")
    auth = {"Authorization": f"Bearer {key}"}
    await store_snapshot(client, namespace, (40, 60))
    for _ in range(2):  # the second answer comes from the cached layer
        assert (await api.get(PATH, headers=auth)).status_code == 200
    await revoke_key(client, namespace.name, record.id)
    # Documented: a revoked key may keep working for up to AB_API_KEY_CACHE_SECONDS...
    now[0] += KEY_CACHE_SECONDS - 0.01
    assert (await api.get(PATH, headers=auth)).status_code == 200
    now[0] += 0.01
    # ...and not a moment longer, on the cached layer and on every other route.
    assert (await api.get(PATH, headers=auth)).status_code == 401
    assert (await api.get(PATH + "?goal_key=click", headers=auth)).status_code == 401
    assert (await api.get("/v2/project/shop/experiments", headers=auth)).status_code == 401


async def test_query_strings_projects_and_keys_never_share_an_entry(
    redis: tuple[Redis, Namespace], api: httpx.AsyncClient, renders: list[str]
) -> None:
    client, namespace = redis
    shop, _ = await create_key(client, namespace.name, "shop")
    rival, _ = await create_key(client, namespace.name, "rival")
    await store_snapshot(client, namespace, (40, 60))
    auth = {"Authorization": f"Bearer {shop}"}
    default = await api.get(PATH, headers=auth)
    click = await api.get(PATH + "?goal_key=click", headers=auth)
    assert (default.json()["goal"]["goal_key"], click.json()["goal"]["goal_key"]) == (
        "signup",
        "click",
    )
    for _ in range(2):  # each from its own entry now
        assert (await api.get(PATH, headers=auth)).content == default.content
        assert (await api.get(PATH + "?goal_key=click", headers=auth)).content == click.content
    assert renders == ["signup", "click"]
    # Another spelling of a question is another entry, answered (and checked) afresh.
    unknown = await api.get(PATH + "?goal_key=nope", headers=auth)
    assert unknown.status_code == 404 and "error" in unknown.json()
    # Keys of another project, unknown keys and no key never reach the shop's entries.
    assert (await api.get(PATH, headers={"x-api-key": rival})).status_code == 404
    assert (await api.get(PATH, headers={"Authorization": "Bearer abk_nope"})).status_code == 401
    assert (await api.get(PATH, headers={"Authorization": f"Basic {shop}"})).status_code == 401
    assert (await api.get(PATH)).status_code == 401
    theirs = await api.get(
        "/v2/project/rival/experiment/theirs/result", headers={"x-api-key": rival}
    )
    assert theirs.status_code == 200 and theirs.json()["test_id"] == "theirs"
