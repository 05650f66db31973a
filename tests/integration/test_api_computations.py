"""The read API's computations never hold up its event loop, and are settled at shutdown.

Loading an experiment's table and computing from it takes seconds at a million
visitors. Here a load blocks its thread until the test has had another request
answered: that only happens when the load runs off the serving loop, whichever route
asked for it. Kameleoon's computations outlive their request: shutdown waits for them
for a while, then cancels them, and their data codes never stay PENDING. Definitions
are written to Redis directly: no worker is needed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from tests.integration.harness import Namespace
from worker.api import app as api_app
from worker.api.app import create_app
from worker.api.kameleoon.routes import SHUT_DOWN
from worker.events.experiment import ExperimentDefinition
from worker.results import service
from worker.store import keys
from worker.store.api_keys import create_key
from worker.store.data_codes import find_data_code

pytestmark = pytest.mark.integration

HOLD_SECONDS = 10.0
"""How long a load waits for the test; a load on the serving loop always waits this
long, as the test cannot run meanwhile."""
PROJECT = "shop"
EXPERIMENT = "slow"
DEFINITION = ExperimentDefinition.model_validate(
    {
        "id": EXPERIMENT,
        "project_key": PROJECT,
        "name": "Slow",
        "status": "live",
        "variants": [{"id": "0", "name": "A", "is_control": True}, {"id": "1", "name": "B"}],
        "goals": [
            {"key": "signup", "name": "Signup", "primary": True},
            {"key": "click", "name": "Click", "type": "count"},
        ],
    }
)


class HeldLoads:
    """``load_table`` whose loads from number ``first_held`` on block their thread until
    :meth:`release` (as parsing a million visitors blocks it for seconds)."""

    def __init__(self, load: Any) -> None:
        self.first_held = 1
        self.waited_out = 0
        """Loads that waited all of HOLD_SECONDS: they blocked the test's loop too."""
        self._load = load
        self._begun = 0
        self._changed = threading.Condition()
        self._released = threading.Event()

    async def __call__(self, *args: Any) -> Any:
        with self._changed:
            self._begun += 1
            number = self._begun
            self._changed.notify_all()
        if number >= self.first_held and not self._released.wait(HOLD_SECONDS):
            self.waited_out += 1
        return await self._load(*args)

    def wait_until_held(self) -> None:
        """Return once the first held load has begun (a thread's wait: it works while
        the loop is blocked)."""
        with self._changed:
            assert self._changed.wait_for(lambda: self._begun >= self.first_held, HOLD_SECONDS)

    def release(self) -> None:
        self._released.set()


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> HeldLoads:
    held = HeldLoads(service.load_table)
    monkeypatch.setattr(service, "load_table", held)
    return held


@pytest.fixture
async def app(namespace: Namespace, redis: Redis) -> FastAPI:
    await redis.hset(keys.experiments_key(namespace.name), EXPERIMENT, DEFINITION.model_dump_json())
    return create_app(namespace.settings)


@pytest.fixture
async def api(app: FastAPI, namespace: Namespace, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    key, _ = await create_key(redis, namespace.name, PROJECT)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://api.test",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        yield client
    await app.state.context.redis.aclose()


async def request_day_breakdown(api: httpx.AsyncClient) -> str:
    """The data code of a Kameleoon request for the results by day."""
    body = {
        "dateIntervals": [{"start": "2026-11-01T00:00:00Z", "end": "2026-11-30T23:59:59Z"}],
        "conversionType": "ALL_CONVERSION",
        "breakdown": {"type": "INTERVAL", "interval": "DAY"},
    }
    response = await api.post(f"/experiments/{EXPERIMENT}/results", json=body)
    assert response.status_code == 200, response.text
    code: str = response.json()["dataCode"]
    return code


async def healthz_answers_while_held(api: httpx.AsyncClient, loads: HeldLoads) -> None:
    """``/healthz`` is answered while a load is held, then the load is released."""
    await asyncio.to_thread(loads.wait_until_held)
    assert (await api.get("/healthz")).status_code == 200
    loads.release()


@pytest.mark.parametrize(
    "path",
    [
        f"/v2/project/{PROJECT}/experiment/{EXPERIMENT}/timeseries",
        # From the counters; a scan runs in another process, held there by test_api_scans.
        f"/v2/project/{PROJECT}/experiment/{EXPERIMENT}/result?filter_by=mobile",
        f"/api/projects/{PROJECT}/experiments/{EXPERIMENT}/timeseries_results?metric_uuid=signup",
        f"/ui/experiments/{EXPERIMENT}",
    ],
)
async def test_a_long_computation_holds_up_no_other_request(
    api: httpx.AsyncClient, loads: HeldLoads, path: str
) -> None:
    slow = asyncio.create_task(api.get(path))
    await healthz_answers_while_held(api, loads)
    assert (await slow).status_code == 200
    assert loads.waited_out == 0, "/healthz waited for the computation"


async def test_kameleoon_day_breakdowns_hold_up_no_other_request(
    api: httpx.AsyncClient, loads: HeldLoads
) -> None:
    loads.first_held = 2  # the whole interval is loaded first, then each goal's days
    code = await request_day_breakdown(api)
    await healthz_answers_while_held(api, loads)
    status = "PENDING"
    while status == "PENDING":
        await asyncio.sleep(0.05)
        status = (await api.get("/results", params={"dataCode": code})).json()["status"]
    assert status == "READY"
    assert loads.waited_out == 0, "/healthz waited for the day breakdown"


async def test_shutdown_waits_for_the_computations_requests_left_running(
    app: FastAPI, api: httpx.AsyncClient, loads: HeldLoads, namespace: Namespace, redis: Redis
) -> None:
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    code = await request_day_breakdown(api)
    await asyncio.to_thread(loads.wait_until_held)
    stopping = asyncio.create_task(lifespan.__aexit__(None, None, None))
    await asyncio.sleep(0.2)
    assert not stopping.done(), "shutdown did not wait for the computation"
    loads.release()
    await stopping
    record = await find_data_code(redis, namespace.name, code)
    assert record is not None and record.status == "READY"


async def test_shutdown_cancels_the_computations_past_its_grace_time(
    app: FastAPI,
    api: httpx.AsyncClient,
    loads: HeldLoads,
    namespace: Namespace,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api_app, "SHUTDOWN_GRACE_SECONDS", 0.2)
    try:
        async with app.router.lifespan_context(app):
            code = await request_day_breakdown(api)
            await asyncio.to_thread(loads.wait_until_held)
    finally:
        loads.release()  # the thread of the cancelled computation runs to its end
    record = await find_data_code(redis, namespace.name, code)
    assert record is not None and (record.status, record.error) == ("ERROR", SHUT_DOWN)
    assert loads.waited_out == 0
