"""Definitions published with the CLI reach the worker; the lifecycle decides what counts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.integration.harness import (
    Namespace,
    WorkerProcesses,
    produce,
    read_topic,
    wait_until_applied,
)
from worker.cli.results_command import collect
from worker.events.experiment import ExperimentStatus
from worker.results.query import ResultQuery
from worker.store.definitions import load_definition

pytestmark = pytest.mark.integration


def apply(namespace: Namespace, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "experiments", "apply", str(path), *extra],
        env={**os.environ, **namespace.env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assignment(
    event_id: str, visitor: str, variant: str, experiment: str = "ld-exp"
) -> tuple[str, bytes, bytes]:
    return ("a", visitor.encode(), json.dumps({
        "event_id": event_id, "experiment_id": experiment, "variant_id": variant,
        "visitor_id": visitor, "timestamp": "2026-11-20T10:00:00+00:00",
    }).encode())  # fmt: skip


def conversion(event_id: str, visitor: str) -> tuple[str, bytes, bytes]:
    return ("c", visitor.encode(), json.dumps({
        "event_id": event_id, "visitor_id": visitor, "goal": "checkout",
        "timestamp": "2026-11-20T11:00:00+00:00",
    }).encode())  # fmt: skip


async def send(namespace: Namespace, messages: list[tuple[str, bytes, bytes]]) -> None:
    topics = {"a": namespace.settings.topic_assignments, "c": namespace.settings.topic_conversions}
    await produce(namespace.settings, [(topics[kind], key, value) for kind, key, value in messages])


async def variant_rows(namespace: Namespace) -> list[dict[str, Any]]:
    """The rows `python -m worker results ld-exp --json` prints."""
    result = await collect(namespace.settings, "ld-exp", ResultQuery())
    return list(result.model_dump(mode="json")["variants"])


def launchdarkly(status: str) -> dict[str, Any]:
    return {
        "key": "ld-exp",
        "name": "LaunchDarkly-shaped experiment",
        "projectKey": "shop",
        "status": status,
        "iteration": {
            "treatments": [
                {"name": "Control", "baseline": True, "allocationPercent": "50", "parameters": [{"variationId": "control"}]},
                {"name": "Treatment", "baseline": False, "allocationPercent": "50", "parameters": [{"variationId": "treatment"}]},
            ],
            "metrics": [{"key": "checkout", "primary": True}],
            "methodology": "bayesian",
        },
    }  # fmt: skip


async def until_the_worker_holds(
    namespace: Namespace, redis: Redis, status: ExperimentStatus
) -> None:
    """Wait until the worker's registry took the published status: a status change
    applies to the events planned after the registry reads it (a topic of its own,
    read beside the events), and the registry stores a definition in Redis after it
    holds it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stored = await load_definition(redis, namespace.settings.key_prefix, "ld-exp")
        if stored is not None and stored.status is status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the worker did not take status {status} within 30 s")


async def test_definition_published_with_the_cli_and_the_lifecycle(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis, tmp_path: Path
) -> None:
    workers.start()
    definition_file = tmp_path / "ld.json"
    definition_file.write_text(json.dumps(launchdarkly("running")))
    result = apply(namespace, definition_file)
    assert result.returncode == 0, result.stderr
    assert "published ld-exp (live, 2 variants)" in result.stdout

    # Published a moment ago: the worker catches its registry up instead of rejecting.
    await send(namespace, [assignment("a1", "u1", "control"), assignment("a2", "u2", "treatment"),
                           assignment("a3", "u3", "treatment"), conversion("c1", "u2")])  # fmt: skip
    await wait_until_applied(namespace.settings, redis)
    live = await variant_rows(namespace)
    assert [(v["variant_id"], v["visitors"], v["conversions"]) for v in live] == [
        ("control", 1, 0), ("treatment", 2, 1),
    ]  # fmt: skip

    definition = json.loads(definition_file.read_text())
    definition["status"] = "inactive"
    definition_file.write_text(json.dumps(definition))
    assert apply(namespace, definition_file).returncode == 0
    await until_the_worker_holds(namespace, redis, ExperimentStatus.INACTIVE)
    # Inactive: no new enrolments, but enrolled visitors still convert.
    await send(namespace, [assignment("a4", "u4", "control"), conversion("c2", "u3")])
    await wait_until_applied(namespace.settings, redis)
    inactive = await variant_rows(namespace)
    assert [(v["visitors"], v["conversions"]) for v in inactive] == [(1, 0), (2, 2)]

    definition["status"] = "completed"
    definition_file.write_text(json.dumps(definition))
    assert apply(namespace, definition_file).returncode == 0
    await until_the_worker_holds(namespace, redis, ExperimentStatus.COMPLETED)
    await send(namespace, [conversion("c3", "u1")])  # frozen: counts nowhere
    await wait_until_applied(namespace.settings, redis)
    completed = await variant_rows(namespace)
    assert [(v["visitors"], v["conversions"]) for v in completed] == [(1, 0), (2, 2)]

    reasons = Counter(
        r["reason"]
        for _, r in await read_topic(namespace.settings, namespace.settings.topic_dead_letter)
    )
    assert reasons["experiment_not_live"] == 1  # the assignment while inactive


def test_apply_rejects_a_bad_definition_with_one_sentence(
    namespace: Namespace, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "type": "ab_test", "variants": [
        {"name": "A", "splitPercentage": 50}, {"name": "B", "splitPercentage": 40}]}))  # fmt: skip
    result = apply(namespace, bad)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "sum to 100" in result.stderr
