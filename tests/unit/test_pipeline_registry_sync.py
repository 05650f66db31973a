"""Events naming an unknown experiment: the registry is synced at most once per id per
few seconds, not once per batch (issue 13.4)."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis

from worker.config import Settings
from worker.events.experiment import ExperimentDefinition
from worker.ingestion import pipeline as pipeline_module
from worker.ingestion.commands import SourceMessage
from worker.ingestion.partitioning import partition_for
from worker.ingestion.pipeline import Pipeline
from worker.ingestion.registry import ExperimentRegistry

PARTITIONS = 4
DEFINITION = ExperimentDefinition.model_validate(
    {
        "id": "known",
        "project_key": "shop",
        "name": "Known",
        "status": "live",
        "variants": [
            {"id": "0", "name": "A", "is_control": True, "traffic_weight": 0.5},
            {"id": "1", "name": "B", "traffic_weight": 0.5},
        ],
        "goals": [{"key": "buy", "name": "Buy", "primary": True}],
    }
)


class FakeRegistry:
    """Definitions in memory; `sync` counts its calls and may reveal a new definition."""

    def __init__(self) -> None:
        self.definitions: dict[str, ExperimentDefinition] = {"known": DEFINITION}
        self.syncs = 0
        self.on_sync: dict[str, ExperimentDefinition] = {}

    async def sync(self) -> None:
        self.syncs += 1
        self.definitions.update(self.on_sync)


def messages(experiments: list[str], first_offset: int = 0) -> list[SourceMessage]:
    out = []
    for number, experiment in enumerate(experiments):
        visitor = f"v{first_offset + number}"
        value = orjson.dumps({
            "event_id": f"e{first_offset + number}", "experiment_id": experiment,
            "variant_id": "0", "visitor_id": visitor, "timestamp": "2026-11-20T10:00:00+00:00",
        })  # fmt: skip
        out.append(
            SourceMessage(
                "ab.assignments",
                partition_for(visitor, PARTITIONS),
                first_offset + number,
                visitor.encode(),
                value,
            )
        )
    return out


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(pipeline_module.time, "monotonic", lambda: now[0])
    return now


def make_pipeline(registry: FakeRegistry) -> Pipeline:
    settings = Settings.from_env()
    # Planning never talks to Redis: a client that connects nowhere until used.
    return Pipeline(
        settings,
        Redis.from_url("redis://127.0.0.1:1/0"),
        cast(Any, None),
        cast(ExperimentRegistry, registry),
        PARTITIONS,
    )


def kinds(batch: Any) -> list[str]:
    return [command["k"] for commands in batch.by_partition.values() for command in commands]


async def test_unknown_experiment_syncs_once_per_id_within_the_interval(clock: list[float]) -> None:
    registry = FakeRegistry()
    pipeline = make_pipeline(registry)
    for round_ in range(12):  # 12 batches with 1 % unknown traffic each
        batch = await pipeline.prepare(messages(["known"] * 99 + ["nope"], round_ * 100))
        assert kinds(batch).count("d") == 1
        clock[0] += 0.2
    assert registry.syncs == 1
    clock[0] += pipeline_module.REGISTRY_SYNC_SECONDS
    await pipeline.prepare(messages(["nope"], 5000))
    assert registry.syncs == 2


async def test_many_unknown_ids_in_one_batch_sync_once(clock: list[float]) -> None:
    registry = FakeRegistry()
    pipeline = make_pipeline(registry)
    await pipeline.prepare(messages([f"nope-{n}" for n in range(50)]))
    assert registry.syncs == 1
    # a new unknown id later on is looked up again
    clock[0] += 1
    await pipeline.prepare(messages(["nope-new"], 100))
    assert registry.syncs == 2


async def test_a_definition_published_a_moment_ago_is_found_by_the_sync(clock: list[float]) -> None:
    registry = FakeRegistry()
    registry.on_sync = {"fresh": DEFINITION.model_copy(update={"id": "fresh"})}
    pipeline = make_pipeline(registry)
    batch = await pipeline.prepare(messages(["known", "fresh", "known"]))
    assert kinds(batch) == ["a", "a", "a"]
    assert registry.syncs == 1
