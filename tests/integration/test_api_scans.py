"""Back-pressure of the read API: per-visitor scans are admitted a few at a time.

With ``AB_API_MAX_SCANS=1`` and a wait of a few milliseconds, a scan is held in its
process until the test releases it, so the slot stays taken for as long as the test
needs: a second distinct scan is refused (503, ``Retry-After``, a sentence) in each
error shape, the same scan asked twice is one computation that both requests get, and
the cheap paths (the default result from the counters, health) are answered while
the slot is taken. Visitors are written through the real Lua sink (no Kafka needed);
the expected counts are plain-Python counts of the visitors written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import multiprocessing
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from multiprocessing.managers import SyncManager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from tests.integration.harness import Namespace
from worker.api.app import create_app
from worker.api.scans import busy_message
from worker.events.experiment import ExperimentDefinition
from worker.ingestion.commands import SourceMessage, plan_assignment
from worker.ingestion.partitioning import partition_for
from worker.results.runners import Processes
from worker.store import keys
from worker.store.api_keys import create_key
from worker.store.batch_sink import BatchSink, SinkSettings

pytestmark = pytest.mark.integration

HOLD_SECONDS = 30.0
"""Longest a held scan waits for the test (a safety net: the test releases it)."""
WAIT_SECONDS = 0.01
PUBLISHED_MS = int(datetime(2026, 11, 3, tzinfo=UTC).timestamp() * 1000)
PARTITIONS = 4
VISITORS = 40
PROJECT = "shop"
EXPERIMENT = "scanned"
BASE = f"/v2/project/{PROJECT}/experiment/{EXPERIMENT}/result"
SCAN = f"{BASE}?min_count=2"
OTHER_SCAN = f"{BASE}?min_count=3"
DEFINITION = ExperimentDefinition.model_validate(
    {
        "id": EXPERIMENT,
        "project_key": PROJECT,
        "name": "Scanned",
        "status": "live",
        "variants": [{"id": "0", "name": "A", "is_control": True}, {"id": "1", "name": "B"}],
        "goals": [{"key": "signup", "name": "Signup", "primary": True}],
    }
)


def variant_of(number: int) -> str:
    return "1" if number % 3 == 0 else "0"


EXPECTED_VISITORS = [Counter(variant_of(n) for n in range(VISITORS))[v] for v in ("0", "1")]


async def held_job(
    started: Any, released: Any, pids: Any, job: Callable[[Redis], Awaitable[Any]], redis: Redis
) -> Any:
    """``job``, in the scan's process, once the test released it (module-level: it is
    pickled to that process)."""
    pids.append(os.getpid())
    started.release()
    assert released.wait(HOLD_SECONDS), "the test never released the scan"
    return await job(redis)


class HeldScans:
    """``Processes.run`` whose scans block in their process until :meth:`release`, as
    parsing a million visitors' states keeps it busy for seconds. ``pids`` are the
    processes the scans ran in."""

    def __init__(self, run: Any, manager: SyncManager) -> None:
        self.scans = 0
        self._run = run
        self._started = manager.Semaphore(0)
        self._released = manager.Event()
        self._pids = manager.list()

    def __call__(self, processes: Processes, job: Callable[[Redis], Awaitable[Any]]) -> Any:
        self.scans += 1
        held = functools.partial(held_job, self._started, self._released, self._pids, job)
        return self._run(processes, held)

    @property
    def pids(self) -> list[int]:
        return list(self._pids)

    async def started(self) -> None:
        """Return once a scan (not yet waited for) has begun in its process."""
        assert await asyncio.to_thread(self._started.acquire, timeout=HOLD_SECONDS)

    def release(self) -> None:
        self._released.set()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldScans]:
    with multiprocessing.get_context("spawn").Manager() as manager:
        scans = HeldScans(Processes.run, manager)
        monkeypatch.setattr(Processes, "run", lambda processes, job: scans(processes, job))
        yield scans
        scans.release()  # a failed test leaves no scan process waiting


async def write_visitors(redis: Redis, prefix: str) -> None:
    """VISITORS assignments through the Lua sink, as the worker applies them."""
    sink = BatchSink(redis, SinkSettings(prefix, 7 * 86400, 3_600_000, assignments_topic="a"))
    commands: dict[int, list[Any]] = {}
    for number in range(VISITORS):
        visitor = f"v{number}"
        partition = partition_for(visitor, PARTITIONS)
        event = {
            "event_id": f"a{number}", "experiment_id": EXPERIMENT, "visitor_id": visitor,
            "variant_id": variant_of(number), "timestamp": "2026-11-02T10:00:00+00:00",
        }  # fmt: skip
        batch = commands.setdefault(partition, [])
        message = SourceMessage(
            "a", partition, len(batch), visitor.encode(), json.dumps(event).encode(),
            timestamp_ms=PUBLISHED_MS + number,
        )  # fmt: skip
        batch.append(plan_assignment(message, {EXPERIMENT: DEFINITION}, PARTITIONS).command)
    for partition, batch in commands.items():
        await sink.apply(partition, batch, [])


@pytest.fixture
async def app(namespace: Namespace, redis: Redis) -> FastAPI:
    await redis.hset(keys.meta_key(namespace.name), "partitions", PARTITIONS)
    await redis.hset(keys.experiments_key(namespace.name), EXPERIMENT, DEFINITION.model_dump_json())
    await write_visitors(redis, namespace.name)
    settings = dataclasses.replace(
        namespace.settings, api_max_scans=1, api_scan_wait_seconds=WAIT_SECONDS
    )
    return create_app(settings)


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


def visitors(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [variant["visitors"] for variant in response.json()["variants"]]


def metric(app: FastAPI, name: str) -> float:
    value = app.state.context.metrics.registry.get_sample_value(name)
    assert value is not None, name
    return float(value)


async def test_a_second_distinct_scan_is_refused_while_the_first_runs(
    app: FastAPI, api: httpx.AsyncClient, held: HeldScans
) -> None:
    first = asyncio.create_task(api.get(SCAN))
    await held.started()

    refused = await api.get(OTHER_SCAN)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json() == {"error": busy_message(1, 1)}
    page = await api.get(f"/ui/experiments/{EXPERIMENT}", params={"breakdown_by": "city"})
    assert page.status_code == 503 and page.headers["retry-after"] == "1"
    assert busy_message(1, 1) in page.text
    assert metric(app, "ab_api_scans_refused_total") == 2
    assert not first.done()

    held.release()
    assert visitors(await first) == EXPECTED_VISITORS
    assert visitors(await api.get(OTHER_SCAN)) == EXPECTED_VISITORS, "the slot was given back"
    assert held.scans == 2


async def test_identical_concurrent_scans_share_one_computation_and_one_slot(
    app: FastAPI, api: httpx.AsyncClient, held: HeldScans, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = app.state.context.results
    start = results._start
    joined = asyncio.Event()
    calls = 0

    def counting_start(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first request's computation is held: the second joins it
            joined.set()
        return start(*args)

    monkeypatch.setattr(results, "_start", counting_start)
    requests = [asyncio.create_task(api.get(SCAN)) for _ in range(2)]
    await held.started()
    await joined.wait()  # the second request is waiting on the first one's computation
    assert metric(app, "ab_api_scans_waiting") == 0, "the joined request took no slot"
    held.release()
    answers = await asyncio.gather(*requests)
    assert [visitors(answer) for answer in answers] == [EXPECTED_VISITORS] * 2
    assert answers[0].content == answers[1].content
    assert held.scans == 1, "one computation for both"
    assert metric(app, "ab_api_scans_refused_total") == 0


async def test_cheap_requests_are_answered_while_scans_take_every_slot(
    app: FastAPI, api: httpx.AsyncClient, held: HeldScans
) -> None:
    scan = asyncio.create_task(api.get(SCAN))
    await held.started()
    assert metric(app, "ab_api_scans_running") == 1

    # No snapshot is stored: the default result is computed, from the counters.
    assert visitors(await api.get(BASE)) == EXPECTED_VISITORS
    assert (await api.get("/healthz")).status_code == 200
    assert not scan.done(), "answered while the scan still held the only slot"

    held.release()
    assert visitors(await scan) == EXPECTED_VISITORS


async def test_a_scan_is_computed_in_a_process_other_than_the_api_s(
    api: httpx.AsyncClient, held: HeldScans
) -> None:
    held.release()
    assert visitors(await api.get(SCAN)) == EXPECTED_VISITORS
    assert visitors(await api.get(OTHER_SCAN)) == EXPECTED_VISITORS
    # One process (AB_API_MAX_SCANS=1), kept for the next scan, and not this one.
    assert len(held.pids) == 2 and len(set(held.pids)) == 1
    assert os.getpid() not in held.pids
