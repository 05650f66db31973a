"""PostHog's experiment routes (seed 003) against real Kafka, a real worker and real
Redis: duplicate, eligible_feature_flags and requires_flag_implementation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.integration.harness import Namespace, WorkerProcesses
from tests.integration.harness import wait_until_applied as applied
from tests.integration.test_api_experiments_writes import (
    BASE,
    WORKER_ENV,
    api,
    auth,
    created,
    keys_for,
    send,
)
from worker.api.app import create_app
from worker.ingestion.topics import ensure_topics
from worker.store import keys
from worker.store.api_keys import EXPERIMENT_READ, FEATURE_FLAG_READ, create_key

pytestmark = pytest.mark.integration

POSTHOG = "/api/projects/shop/experiments"


async def test_duplicate_is_a_draft_copy_and_only_unexposed_flags_need_implementing(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    settings = namespace.settings
    await ensure_topics(settings)
    workers.start(**WORKER_ENV)
    writer, reader = await keys_for(settings)
    rival, _ = await keys_for(settings, "rival")
    async with api(settings) as client:
        assert (await client.post(BASE, json=created(), headers=auth(writer))).status_code == 201
        assert (await client.post(f"{BASE}/checkout-flow/start", headers=auth(writer))).is_success
    await send(settings, [("v1", "control"), ("v2", "onepage"), ("v3", "onepage")], [])
    await applied(settings, redis)

    async with api(settings) as client:
        response = await client.post(f"{POSTHOG}/checkout-flow/duplicate", headers=auth(writer))
        assert response.status_code == 201, response.text
        copy = response.json()
        assert copy["id"].startswith("checkout-flow-copy-") and copy["id"] != "checkout-flow"
        assert copy["name"] == "Checkout flow (Copy)"
        assert (copy["start_date"], copy["end_date"], copy["archived"]) == (None, None, False)
        assert copy["feature_flag_key"] == copy["id"] and copy["exposures"] == 0
        assert copy["parameters"] == {
            "feature_flag_variants": [
                {"key": "control", "name": "Three steps", "rollout_percentage": 50.0},
                {"key": "onepage", "name": "One page", "rollout_percentage": 50.0},
            ]
        }
        stored = (await client.get(f"{BASE}/{copy['id']}", headers=auth(reader))).json()["data"]
        assert stored["status"] == "draft"
        assert stored["description"] == created()["description"]
        source = (await client.get(f"{BASE}/checkout-flow", headers=auth(reader))).json()["data"]
        assert (source["status"], source["_count"]) == ("running", {"assignments": 3})

        waiting = await client.get(f"{POSTHOG}/requires_flag_implementation", headers=auth(reader))
        assert waiting.status_code == 200
        assert [row["id"] for row in waiting.json()["results"]] == [copy["id"]]

        for key, path, status in (
            (reader, "checkout-flow", 403),
            (writer, "missing", 404),
            (rival, "checkout-flow", 404),
        ):
            refused = await client.post(f"{POSTHOG}/{path}/duplicate", headers=auth(key))
            assert refused.status_code == status, refused.text
        forbidden = await client.post(f"{POSTHOG}/checkout-flow/duplicate", headers=auth(reader))
        assert forbidden.json()["detail"] == "API key missing required scope 'experiment:write'"


def samples(series: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(day, control's, onepage's number_of_samples) of each day."""
    return [
        (
            day,
            entry["baseline"]["number_of_samples"],
            entry["variant_results"][0]["number_of_samples"],
        )
        for day, entry in series["timeseries"].items()
    ]


async def test_a_recalculated_timeseries_is_served_until_recalculated_or_reconfigured(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    settings = namespace.settings
    await ensure_topics(settings)
    workers.start(**WORKER_ENV)
    writer, reader = await keys_for(settings)
    series_path = f"{POSTHOG}/checkout-flow/timeseries_results"
    recalculate = f"{POSTHOG}/checkout-flow/recalculate_timeseries"
    metric = {"metric_uuid": "checkout"}
    async with api(settings) as client:
        assert (await client.post(BASE, json=created(), headers=auth(writer))).status_code == 201
        assert (await client.post(f"{BASE}/checkout-flow/start", headers=auth(writer))).is_success
    await send(settings, [("v1", "control"), ("v2", "onepage"), ("v3", "onepage")], [])
    await applied(settings, redis)
    today = datetime.now(UTC).date().isoformat()

    async with api(settings) as client:
        live = (await client.get(series_path, params=metric, headers=auth(reader))).json()
        assert samples(live) == [(today, 1, 2)]
        refused = await client.post(recalculate, json=metric, headers=auth(reader))
        assert refused.status_code == 403
        response = await client.post(recalculate, json=metric, headers=auth(writer))
        assert response.status_code == 200, response.text
        stored = response.json()
        assert samples(stored) == [(today, 1, 2)]
        assert stored["fingerprint"] == live["fingerprint"]
        bad = await client.post(recalculate, json={"metric_uuid": "nope"}, headers=auth(writer))
        assert bad.status_code == 404

    await send(settings, [("v4", "control")], [])
    await applied(settings, redis)
    async with api(settings) as client:
        served = (await client.get(series_path, params=metric, headers=auth(reader))).json()
        assert served == stored  # the stored series, not the new data
        asked = {**metric, "fingerprint": stored["fingerprint"]}
        assert (await client.get(series_path, params=asked, headers=auth(reader))).json() == stored
        unknown = {**metric, "fingerprint": "0" * 16}
        assert (
            await client.get(series_path, params=unknown, headers=auth(reader))
        ).status_code == 404
        again = (await client.post(recalculate, json=metric, headers=auth(writer))).json()
        assert samples(again) == [(today, 2, 2)]
        assert datetime.fromisoformat(again["computed_at"]) > datetime.fromisoformat(
            stored["computed_at"]
        )

        # Archiving sets the end: another configuration, so the series is computed anew.
        assert (await client.delete(f"{BASE}/checkout-flow", headers=auth(writer))).is_success
        current = (await client.get(series_path, params=metric, headers=auth(reader))).json()
        assert current["fingerprint"] != again["fingerprint"]
        assert samples(current) == [(today, 2, 2)]
        old = {**metric, "fingerprint": again["fingerprint"]}
        assert (await client.get(series_path, params=old, headers=auth(reader))).json() == again


def flag_definition(
    experiment_id: str, status: str, variants: list[str], name: str, created_at: str | None
) -> dict[str, Any]:
    return {
        "id": experiment_id,
        "project_key": "shop",
        "name": name,
        "status": status,
        "variants": [
            {"id": variant, "name": variant.title(), "is_control": index == 0}
            for index, variant in enumerate(variants)
        ],
        "goals": [{"key": "buy", "name": "Buy", "primary": True}],
        "created_at": created_at,
    }


DEFINITIONS = [
    flag_definition("f-live", "live", ["control", "b"], "Hero banner", "2026-12-01T00:00:00Z"),
    flag_definition("f-draft", "draft", ["control", "b", "c"], "Pricing", "2026-12-03T00:00:00Z"),
    flag_definition("f-done", "completed", ["control", "b"], "Banner colour", None),
    flag_definition("f-one", "live", ["control"], "Single", "2026-12-02T00:00:00Z"),
    flag_definition("f-first", "live", ["b", "control"], "Banner order", "2026-12-04T00:00:00Z"),
]


@pytest.fixture
async def client(namespace: Namespace) -> AsyncIterator[httpx.AsyncClient]:
    settings = namespace.settings
    async with Redis.from_url(settings.redis_url) as redis:
        for definition in DEFINITIONS:
            await redis.hset(
                keys.experiments_key(settings.key_prefix), definition["id"], json.dumps(definition)
            )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        yield http
    await app.state.context.redis.aclose()


async def test_eligible_feature_flags_are_filtered_ordered_and_paged(
    client: httpx.AsyncClient, namespace: Namespace
) -> None:
    async with Redis.from_url(namespace.settings.redis_url) as redis:
        key, _ = await create_key(redis, namespace.settings.key_prefix, "shop", [FEATURE_FLAG_READ])
        reader, _ = await create_key(
            redis, namespace.settings.key_prefix, "shop", [EXPERIMENT_READ]
        )
    eligible = [
        d for d in DEFINITIONS if len(d["variants"]) >= 2 and d["variants"][0]["id"] == "control"
    ]

    async def flags(**params: Any) -> dict[str, Any]:
        response = await client.get(
            f"{POSTHOG}/eligible_feature_flags", params=params, headers=auth(key)
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    every = await flags()
    assert [flag["key"] for flag in every["results"]] == sorted(d["id"] for d in eligible)
    assert (every["count"], every["next"], every["previous"]) == (3, None, None)
    live = next(flag for flag in every["results"] if flag["key"] == "f-live")
    assert live == {
        "id": "f-live",
        "key": "f-live",
        "name": "Hero banner",
        "active": True,
        "created_at": "2026-12-01T00:00:00Z",
        "filters": {
            "multivariate": {
                "variants": [
                    {"key": "control", "name": "Control", "rollout_percentage": 50.0},
                    {"key": "b", "name": "B", "rollout_percentage": 50.0},
                ]
            }
        },
    }
    banner = await flags(search="BANNER")
    assert [flag["key"] for flag in banner["results"]] == sorted(
        d["id"] for d in eligible if "banner" in d["name"].lower()
    )
    active = await flags(active="true")
    assert [flag["key"] for flag in active["results"]] == ["f-live"]
    inactive = await flags(active="false")
    assert [flag["key"] for flag in inactive["results"]] == ["f-done", "f-draft"]
    newest = await flags(order="-created_at")
    assert [flag["key"] for flag in newest["results"]] == ["f-draft", "f-live", "f-done"]
    by_name = await flags(order="name")
    assert [flag["name"] for flag in by_name["results"]] == sorted(d["name"] for d in eligible)
    first = await flags(limit=2)
    assert [flag["key"] for flag in first["results"]] == ["f-done", "f-draft"]
    assert first["previous"] is None and first["next"] is not None
    second = (await client.get(first["next"], headers=auth(key))).json()
    assert [flag["key"] for flag in second["results"]] == ["f-live"]
    assert second["next"] is None and "offset=0" in second["previous"]

    for params in ({"order": "popularity"}, {"limit": "0"}, {"active": "maybe"}):
        response = await client.get(
            f"{POSTHOG}/eligible_feature_flags", params=params, headers=auth(key)
        )
        assert response.status_code == 400, params
    other = await client.get(
        "/api/projects/rival/experiments/eligible_feature_flags", headers=auth(key)
    )
    assert other.status_code == 404
    refused = await client.get(f"{POSTHOG}/eligible_feature_flags", headers=auth(reader))
    assert refused.status_code == 403
    assert refused.json()["detail"] == "API key missing required scope 'feature_flag:read'"

    waiting = await client.get(f"{POSTHOG}/requires_flag_implementation", headers=auth(reader))
    assert [row["id"] for row in waiting.json()["results"]] == sorted(
        d["id"] for d in DEFINITIONS if d["status"] != "completed"
    )


def run(
    experiment_id: str, status: str, started: str | None, ended: str | None = None
) -> dict[str, Any]:
    definition = flag_definition(experiment_id, status, ["control", "b"], experiment_id, None)
    return definition | {"started_at": started, "ended_at": ended}


RUNS = [
    run("s1", "completed", "2026-10-05T10:00:00Z", "2026-11-10T10:00:00Z"),
    run("s2", "completed", "2026-11-02T10:00:00Z", "2026-11-20T10:00:00Z"),
    run("s3", "live", "2026-11-15T10:00:00Z"),
    run("s4", "inactive", "2026-12-01T12:00:00Z"),
    run("s5", "draft", None),
    run("s6", "completed", "2026-10-20T10:00:00Z", "2026-12-02T10:00:00Z"),
]
WINNERS = {"s1": "b", "s2": "control"}
"""s1 won; s2's winner is the control, which is no win; s6 concluded without one."""


async def test_stats_count_launched_concluded_running_and_wins_per_period(
    namespace: Namespace,
) -> None:
    settings = namespace.settings
    async with Redis.from_url(settings.redis_url) as redis:
        for definition in RUNS:
            await redis.hset(
                keys.experiments_key(settings.key_prefix), definition["id"], json.dumps(definition)
            )
        for experiment_id, winner in WINNERS.items():
            await redis.set(
                keys.decision_state_key(settings.key_prefix, experiment_id),
                json.dumps({"winner": winner}),
            )
        key, _ = await create_key(redis, settings.key_prefix, "shop", [EXPERIMENT_READ])
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        monthly = await client.get(f"{POSTHOG}/stats", headers=auth(key))
        weekly = await client.get(
            f"{POSTHOG}/stats", params={"period": "week", "periods": 2}, headers=auth(key)
        )
        bad = await client.get(f"{POSTHOG}/stats", params={"period": "day"}, headers=auth(key))
    await app.state.context.redis.aclose()
    assert monthly.status_code == 200, monthly.text
    body = monthly.json()
    assert body["period"] == "month"
    # Worked out by hand from RUNS: running means at the end of the period.
    assert body["periods"][:3] == [
        {"period_start": "2026-10-01", "launched": 2, "concluded": 0, "running": 2, "won": 0, "win_rate": None},
        {"period_start": "2026-11-01", "launched": 2, "concluded": 2, "running": 2, "won": 1, "win_rate": 0.5},
        {"period_start": "2026-12-01", "launched": 1, "concluded": 1, "running": 2, "won": 0, "win_rate": 0.0},
    ]  # fmt: skip
    assert body["totals"] == {
        "launched": 5, "concluded": 3, "running": 2, "won": 1, "win_rate": pytest.approx(1 / 3),
    }  # fmt: skip
    assert weekly.status_code == 200
    weeks = [row["period_start"] for row in weekly.json()["periods"]]
    today = datetime.now(UTC).date()
    monday = today - timedelta(days=today.weekday())
    assert weeks == [(monday - timedelta(days=7)).isoformat(), monday.isoformat()]
    assert bad.status_code == 400
