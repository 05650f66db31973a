"""The Experiments API's writes (seed 004) against real Kafka, a real worker and real Redis:
every write is published to `ab.experiments` and answered once the worker's registry
stored it; the whole lifecycle runs through the HTTP API alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.integration.harness import Namespace, WorkerProcesses, produce, read_topic
from tests.integration.harness import wait_until_applied as applied
from worker.api.app import create_app
from worker.config import Settings
from worker.ingestion.topics import ensure_topics
from worker.store.api_keys import EXPERIMENT_READ, EXPERIMENT_WRITE, create_key
from worker.store.definitions import load_definition

pytestmark = pytest.mark.integration

BASE = "/api/experiments"
WORKER_ENV = {"AB_RESULTS_INTERVAL": "3600"}
"""No periodic snapshot: results are computed from the counters when asked."""


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A new API app (its own caches, as a separate API process has) and a client."""
    app = create_app(replace(settings, api_write_wait_seconds=60))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield client
    finally:
        await app.state.context.publisher.close()
        await app.state.context.redis.aclose()


async def keys_for(settings: Settings, project: str = "shop") -> tuple[str, str]:
    """A key that may read and write, and one that may only read."""
    async with Redis.from_url(settings.redis_url) as redis:
        writer, _ = await create_key(
            redis, settings.key_prefix, project, (EXPERIMENT_READ, EXPERIMENT_WRITE)
        )
        reader, _ = await create_key(redis, settings.key_prefix, project)
    return writer, reader


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def created(experiment_id: str = "checkout-flow") -> dict[str, Any]:
    return {
        "id": experiment_id,
        "name": "Checkout flow",
        "description": "One-page checkout against the current three steps",
        "audienceId": "returning",
        "variants": [
            {"id": "control", "name": "Three steps", "splitPercentage": 50, "flowId": "flow-3"},
            {"id": "onepage", "name": "One page", "splitPercentage": 50, "flowId": "flow-1"},
        ],
        "goals": [{"key": "checkout", "name": "Checkout"}],
    }


async def send(
    settings: Settings,
    assignments: list[tuple[str, str]],
    conversions: list[str],
    experiment: str = "checkout-flow",
    goal: str = "checkout",
    values: dict[str, float] | None = None,
) -> None:
    """Assignments (visitor, variant) of ``experiment``, then conversions on ``goal``
    (with the visitor's value, if any), now."""
    now = datetime.now(UTC)
    messages = [
        (settings.topic_assignments, visitor.encode(), json.dumps({
            "event_id": f"a-{experiment}-{visitor}", "experiment_id": experiment,
            "variant_id": variant, "visitor_id": visitor, "timestamp": now.isoformat(),
        }).encode())
        for visitor, variant in assignments
    ] + [
        (settings.topic_conversions, visitor.encode(), json.dumps({
            "event_id": f"c-{goal}-{visitor}", "visitor_id": visitor, "goal": goal,
            "timestamp": (now + timedelta(seconds=1)).isoformat(),
            **({"value": values[visitor], "currency": "EUR"} if values else {}),
        }).encode())
        for visitor in conversions
    ]  # fmt: skip
    await produce(settings, messages)


def tally(assignments: list[tuple[str, str]], conversions: list[str]) -> dict[str, tuple[int, int]]:
    """The oracle: per variant, (visitors, visitors who converted)."""
    variant_of = dict(assignments)
    counts = {variant: [0, 0] for variant in ("control", "onepage")}
    for variant in variant_of.values():
        counts[variant][0] += 1
    for visitor in set(conversions):
        if visitor in variant_of:
            counts[variant_of[visitor]][1] += 1
    return {variant: (v, c) for variant, (v, c) in counts.items()}


async def results_of(settings: Settings, key: str) -> dict[str, Any]:
    async with api(settings) as client:
        response = await client.get(f"{BASE}/checkout-flow/results", headers=auth(key))
        computed = await client.post(f"{BASE}/checkout-flow/compute-results", headers=auth(key))
    assert response.status_code == computed.status_code == 200, (response.text, computed.text)
    return {"results": response.json()["data"], "computed": computed.json()["data"]}


def assert_numbers(body: dict[str, Any], expected: dict[str, tuple[int, int]]) -> None:
    rows = {
        v["variantId"]: (v["participants"], v["results"][0]["conversions"])
        for v in body["results"]["variants"]
    }
    computed = {
        v["variantId"]: (v["sampleSize"], v["conversions"]) for v in body["computed"]["variants"]
    }
    assert rows == computed == expected
    for variant in body["computed"]["variants"]:
        visitors, conversions = expected[variant["variantId"]]
        assert variant["conversionRate"] == pytest.approx(conversions / visitors)


async def test_create_start_traffic_results_stop_archive_through_the_api_alone(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    settings = namespace.settings
    await ensure_topics(settings)
    workers.start(**WORKER_ENV)
    writer, reader = await keys_for(settings)

    async with api(settings) as client:
        response = await client.post(BASE, json=created(), headers=auth(writer))
        assert response.status_code == 201, response.text
        draft = response.json()["data"]
        assert draft["createdAt"] is not None and draft["createdAt"] == draft["updatedAt"]
        assert {k: v for k, v in draft.items() if k not in ("createdAt", "updatedAt")} == {
            "id": "checkout-flow",
            "name": "Checkout flow",
            "description": "One-page checkout against the current three steps",
            "type": "ab_test",
            "status": "draft",
            "audienceId": "returning",
            "startDate": None,
            "endDate": None,
            "variants": [
                {"id": "control", "name": "Three steps", "splitPercentage": 50.0, "flowId": "flow-3"},
                {"id": "onepage", "name": "One page", "splitPercentage": 50.0, "flowId": "flow-1"},
            ],
            "_count": {"assignments": 0},
        }  # fmt: skip
        got = await client.get(f"{BASE}/checkout-flow", headers=auth(reader))
        assert got.json() == {"data": draft}

        variants = [
            dict(v, splitPercentage=p) for v, p in zip(created()["variants"], (60, 40), strict=True)
        ]
        patch = {"name": "Checkout flow (60/40)", "variants": variants}
        response = await client.patch(f"{BASE}/checkout-flow", json=patch, headers=auth(writer))
        assert response.status_code == 200, response.text
        patched = response.json()["data"]
        assert patched["name"] == "Checkout flow (60/40)"
        assert [v["splitPercentage"] for v in patched["variants"]] == [60.0, 40.0]
        assert patched["createdAt"] == draft["createdAt"]
        assert moment(patched["updatedAt"]) > moment(patched["createdAt"])
        drafts = (await client.get(BASE, params={"status": "draft"}, headers=auth(reader))).json()
        assert drafts["data"] == [patched] and drafts["meta"]["total"] == 1

        response = await client.post(f"{BASE}/checkout-flow/start", headers=auth(writer))
        assert response.status_code == 200, response.text
        running = response.json()["data"]
        assert running["status"] == "running" and running["startDate"] is not None
        for method, path in (("PATCH", ""), ("POST", "/start")):
            conflict = await client.request(
                method, f"{BASE}/checkout-flow{path}", json=patch, headers=auth(writer)
            )
            assert conflict.status_code == 409
            assert "is running" in conflict.json()["error"]

    assignments = [(f"v{i}", "control" if i % 5 < 3 else "onepage") for i in range(40)]
    conversions = [f"v{i}" for i in range(40) if i % 3 == 0]
    await send(settings, assignments, conversions)
    await applied(settings, redis)
    assert_numbers(await results_of(settings, reader), tally(assignments, conversions))

    async with api(settings) as client:
        response = await client.post(f"{BASE}/checkout-flow/stop", headers=auth(writer))
        assert response.status_code == 200, response.text
        assert response.json()["data"]["status"] == "stopped"
        listed = (await client.get(BASE, params={"status": "stopped"}, headers=auth(reader))).json()
        assert [row["id"] for row in listed["data"]] == ["checkout-flow"]
    # Stopped: a new visitor is not enrolled, an enrolled one still converts.
    await send(settings, [("late", "control")], ["v1"])
    await applied(settings, redis)
    expected = tally(assignments, [*conversions, "v1"])
    assert_numbers(await results_of(settings, reader), expected)

    async with api(settings) as client:
        response = await client.delete(f"{BASE}/checkout-flow", headers=auth(writer))
        assert response.status_code == 200, response.text
        archived = response.json()["data"]
        assert archived["status"] == "completed" and archived["endDate"] is not None
        assert archived["_count"] == {"assignments": len(assignments)}
        for action in ("start", "stop"):
            conflict = await client.post(f"{BASE}/checkout-flow/{action}", headers=auth(writer))
            assert conflict.status_code == 409
        again = await client.delete(f"{BASE}/checkout-flow", headers=auth(writer))
        assert again.status_code == 200 and again.json()["data"]["status"] == "completed"

    published = await read_topic(settings, settings.topic_experiments)
    assert [value["status"] for key, value in published if key == b"checkout-flow"] == [
        "draft", "draft", "live", "inactive", "completed",
    ]  # fmt: skip


async def test_write_errors_are_400_401_403_404_and_409_with_one_sentence(
    namespace: Namespace, workers: WorkerProcesses
) -> None:
    settings = namespace.settings
    await ensure_topics(settings)
    workers.start(**WORKER_ENV)
    writer, reader = await keys_for(settings)
    rival, _ = await keys_for(settings, "rival")

    async with api(settings) as client:
        assert (await client.post(BASE, json=created(), headers=auth(writer))).status_code == 201

        async def error(
            status: int, method: str, path: str, key: str | None, body: Any = None
        ) -> str:
            headers = {} if key is None else auth(key)
            response = await client.request(method, BASE + path, json=body, headers=headers)
            assert response.status_code == status, (method, path, response.text)
            assert list(response.json()) == ["error"]
            message: str = response.json()["error"]
            return message

        uneven = created("uneven")
        uneven["variants"][1]["splitPercentage"] = 40
        assert "must sum to 100, got 90" in await error(400, "POST", "", writer, uneven)
        assert "variants" in await error(400, "POST", "", writer, {"name": "No variants"})
        wrong_type = created("mab") | {"type": "multi_armed_bandit"}
        assert "type" in await error(400, "POST", "", writer, wrong_type)
        unknown_field = created("extra") | {"owner": "me"}
        assert "owner" in await error(400, "POST", "", writer, unknown_field)
        no_control = created("two-controls")
        for variant in no_control["variants"]:
            variant["isControl"] = True
        assert "control" in await error(400, "POST", "", writer, no_control)
        bad_split = {"variants": [{"name": "Only", "splitPercentage": 99}]}
        assert "sum to 100" in await error(400, "PATCH", "/checkout-flow", writer, bad_split)
        assert "id" in await error(400, "POST", "", writer, created("no spaces allowed"))

        assert await error(401, "POST", "", None, created("anonymous"))
        assert "experiment:write" in await error(403, "POST", "", reader, created("read-only"))
        assert "experiment:write" in await error(403, "POST", "/checkout-flow/start", reader)

        assert await error(404, "PATCH", "/missing", writer, {"name": "x"})
        for method, path in (
            ("PATCH", "/checkout-flow"),
            ("POST", "/checkout-flow/start"),
            ("POST", "/checkout-flow/stop"),
            ("DELETE", "/checkout-flow"),
        ):
            assert await error(404, method, path, rival, {"name": "x"})

        assert "already exists" in await error(409, "POST", "", writer, created())
        # Ids are global: another project cannot take one either.
        assert "already exists" in await error(409, "POST", "", rival, created())
        assert "only a running experiment" in await error(
            409, "POST", "/checkout-flow/stop", writer
        )

        untouched = await client.get(f"{BASE}/checkout-flow", headers=auth(reader))
        assert untouched.json()["data"]["status"] == "draft"
        assert [v["splitPercentage"] for v in untouched.json()["data"]["variants"]] == [50, 50]


async def test_a_write_no_worker_stores_is_answered_202_and_is_in_the_topic(
    namespace: Namespace,
) -> None:
    settings = replace(namespace.settings, api_write_wait_seconds=0.3)
    await ensure_topics(settings)
    writer, reader = await keys_for(settings)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        response = await client.post(BASE, json=created("unapplied"), headers=auth(writer))
        missing = await client.get(f"{BASE}/unapplied", headers=auth(reader))
    await app.state.context.publisher.close()
    await app.state.context.redis.aclose()
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["data"]["id"] == "unapplied" and body["data"]["status"] == "draft"
    assert "no worker stored it within 0.3 s" in body["message"]
    assert missing.status_code == 404
    published = await read_topic(settings, settings.topic_experiments)
    assert [(key, value["status"]) for key, value in published] == [(b"unapplied", "draft")]


async def test_a_write_without_kafka_is_503_with_a_sentence(namespace: Namespace) -> None:
    settings = replace(namespace.settings, kafka_bootstrap_servers="127.0.0.1:9")
    writer, _ = await keys_for(settings)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        response = await client.post(BASE, json=created(), headers=auth(writer))
    await app.state.context.publisher.close()
    await app.state.context.redis.aclose()
    assert response.status_code == 503
    assert "did not take the definition" in response.json()["error"]


def native_draft(experiment_id: str, goal: str) -> dict[str, Any]:
    """A draft with a revenue goal capped at its 90th percentile, in the native shape."""
    return {
        "id": experiment_id,
        "project_key": "shop",
        "name": experiment_id,
        "variants": [{"id": "a", "name": "A", "is_control": True}, {"id": "b", "name": "B"}],
        "goals": [
            {"key": goal, "name": goal, "type": "revenue", "primary": True, "cap_percentile": 90}
        ],
    }


async def test_start_fixes_a_percentile_cap_as_experiments_apply_does(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis, tmp_path: Path
) -> None:
    settings = namespace.settings
    await ensure_topics(settings)
    workers.start(**WORKER_ENV)
    writer, reader = await keys_for(settings)
    source = created("source") | {"goals": [{"key": "basket", "type": "revenue"}]}
    async with api(settings) as client:
        assert (await client.post(BASE, json=source, headers=auth(writer))).status_code == 201
        started = await client.post(f"{BASE}/source/start", headers=auth(writer))
        assert started.status_code == 200
    # Before launch: 19 visitors spent 5, one 1000; the 90th percentile is 5 whichever
    # way a percentile interpolates (the 18th and 19th of 20 sorted values are both 5).
    visitors = [f"s{i}" for i in range(20)]
    values = {visitor: 1000.0 if visitor == "s0" else 5.0 for visitor in visitors}
    await send(settings, [(v, "control") for v in visitors], visitors, "source", "basket", values)
    await applied(settings, redis)

    for experiment_id, goal in (("capped", "basket"), ("no-history", "never-seen")):
        path = tmp_path / f"{experiment_id}.json"
        path.write_text(json.dumps(native_draft(experiment_id, goal)))
        subprocess.run(
            [sys.executable, "-m", "worker", "experiments", "apply", str(path)],
            env={**os.environ, **namespace.env},
            check=True,
            capture_output=True,
        )
    async with api(settings) as client:
        for _ in range(1200):  # until the worker's registry stored both (at most 2 min)
            if (await client.get(f"{BASE}/no-history", headers=auth(reader))).status_code == 200:
                break
            await asyncio.sleep(0.1)
        response = await client.post(f"{BASE}/capped/start", headers=auth(writer))
        assert response.status_code == 200, response.text
        assert response.json()["data"]["status"] == "running"
        refused = await client.post(f"{BASE}/no-history/start", headers=auth(writer))
        assert refused.status_code == 409
        assert "no visitor had its events" in refused.json()["error"]
    capped = await load_definition(redis, settings.key_prefix, "capped")
    assert capped is not None and capped.goals[0].cap == 5.0
    still_draft = await load_definition(redis, settings.key_prefix, "no-history")
    assert still_draft is not None and still_draft.status.value == "draft"
