"""The OpenAPI document tells the truth: schemathesis, every check on, against the real
API server over ingested data.

Schemathesis runs as its command line does for a user (``schemathesis run``), with a
config file this module writes: path parameters pinned to existing resources so that
generated queries reach the parsers and the computations, not a 404, and a fixed seed so
that a failure reproduces (``AB_FUZZ_SEED`` picks another). Any failure of any check
(``ST202``: accepted by the schema, rejected by the code; a 405 without ``Allow``; a
response outside the document) fails the test with schemathesis's own report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.dataset import Dataset, generate
from tests.integration.harness import (
    Namespace,
    api_server,
    apply_with_one_worker,
    delete_keys,
)
from tests.integration.services import Endpoints
from tests.integration.test_ingestion import produce_dataset
from worker.store.api_keys import SCOPES, create_key

pytestmark = pytest.mark.integration

PROJECT = "shop"
EXPERIMENT = "exp-a"
PINNED = {
    "project_key": PROJECT,
    "projectKey": PROJECT,
    "project_id": PROJECT,
    "test_id": EXPERIMENT,
    "experiment_id": EXPERIMENT,
    "experimentId": EXPERIMENT,
    "experimentKey": EXPERIMENT,
    "featureFlagId": EXPERIMENT,
    "environmentKey": "production",
}
"""Path parameters of existing resources (the generated data set's project and its
first live experiment)."""

JSON_TEXT_PINNED = {
    "custom_filter": '[[{"criteria": "device", "operator": "==", "value": "mobile"}]]',
    "event_attribute": '[[{"key": "plan", "operand": "==", "value": "pro"}]]',
}
"""Mida's JSON-in-text parameters, pinned to valid values: a JSON grammar with
per-criterion operators and value forms is beyond what schemathesis generates from a
string parameter, so their rules are tested by tests/unit/test_api_params.py and the
hypothesis test of test_api_mida.py instead, and fuzzing covers every other parameter."""

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
"""The rules across fields JSON Schema cannot state (see that module)."""

MIDA_SERIES = "/v2/project/{project_key}/experiment/{test_id}"
LD_EXPERIMENTS = "/api/v2/projects/{projectKey}/environments/{environmentKey}/experiments"
CROSS_FIELD_OPERATIONS = {
    "POST /api/experiments": "splitPercentage summing to 100, one control",
    "POST /experiments/{experimentId}/results": "interval order, goalId vs goalsIds, engine",
    "POST /feature-flags/{featureFlagId}/results": "interval order, goalId vs goalsIds, engine",
    f"POST {LD_EXPERIMENTS}": "the first iteration's rules, type vs its fields",
    f"POST {LD_EXPERIMENTS}/{{experimentKey}}/iterations": "the iteration's rules",
    f"GET {MIDA_SERIES}/result": "date order, goal_key vs goal_profile_id",
    f"GET {MIDA_SERIES}/metrics": "date order, goal_key vs goal_profile_id",
    f"GET {MIDA_SERIES}/timeseries": "date order, goal_key vs goal_profile_id",
}
"""Operations with such rules. The hooks keep them out of the fuzzing phase, but the
coverage phase (boundary values of each field) runs no hooks, so there alone these
operations may answer a schema-valid request with 400; fuzzing holds them to ST202."""

MAX_EXAMPLES = 15


@pytest.fixture(scope="module")
def fuzz_namespace(endpoints: Endpoints) -> Iterator[Namespace]:
    namespace = Namespace.create(endpoints, f"t{uuid.uuid4().hex[:10]}")
    yield namespace
    delete_keys(namespace.settings.redis_url, namespace.settings.key_prefix)


@pytest.fixture(scope="module")
async def ingested(
    fuzz_namespace: Namespace, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Dataset]:
    data = generate(seed=67, visitors=600, partitions=fuzz_namespace.settings.partitions)
    await produce_dataset(fuzz_namespace, data)
    await apply_with_one_worker(fuzz_namespace, tmp_path_factory.mktemp("fuzz-worker"))
    yield data


@pytest.fixture(scope="module")
async def full_key(fuzz_namespace: Namespace, ingested: Dataset) -> str:
    settings = fuzz_namespace.settings
    async with Redis.from_url(settings.redis_url) as redis:
        key, _ = await create_key(redis, settings.key_prefix, PROJECT, SCOPES)
    return key


def schemathesis_config(seed: int) -> str:
    """The config file: pinned path parameters, bounded examples, every check."""
    lines = [
        f'hooks = "{HOOKS}"',
        f"seed = {seed}",
        "workers = 1",
        # A scan waits for its process under a loaded machine; 10 s (the default) is
        # the API's business, not the document's.
        "request-timeout = 60",
        f"generation.max-examples = {MAX_EXAMPLES}",
        "checks.enabled = true",
        # No state in the checkout between runs (the cache would go to ./.schemathesis).
        "cache.enabled = false",
        "[parameters]",
        *(f'"path.{name}" = "{value}"' for name, value in PINNED.items()),
        *(f"\"query.{name}\" = '{value}'" for name, value in JSON_TEXT_PINNED.items()),
    ]
    for name, rules in CROSS_FIELD_OPERATIONS.items():
        lines += [
            "[[operations]]",
            f"# {rules}",
            f'include-name = "{name}"',
            "phases.coverage.checks.positive_data_acceptance.expected-statuses = "
            '["2XX", 400, 401, 403, 404, 409]',
        ]
    return "\n".join(lines) + "\n"


def test_schemathesis_every_check_finds_nothing(
    fuzz_namespace: Namespace, full_key: str, tmp_path: Path
) -> None:
    """Valid and invalid requests from the document (examples, coverage, fuzzing), every
    check on: no 5xx, no schema-valid request rejected, no response the document does not
    describe, 405s with ``Allow``, and authentication enforced."""
    seed = int(os.environ.get("AB_FUZZ_SEED", "20261207"))
    config = tmp_path / "schemathesis.toml"
    config.write_text(schemathesis_config(seed))
    # Writes publish to Kafka and wait for the registry, which no worker runs here: a
    # short wait keeps each write at its 202 instead of 10 s. Scans wait their turn
    # rather than get back-pressure's 503 on a loaded machine (a 5xx fails the fuzz;
    # test_api_scans tests the 503).
    env = fuzz_namespace.env | {
        "AB_API_WRITE_WAIT_SECONDS": "0.2",
        "AB_API_SCAN_WAIT_SECONDS": "50",
    }
    with api_server(env, tmp_path / "api.log") as base:
        outcome = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(config),
                "run",
                f"{base}/openapi.json",
                "--header",
                f"Authorization: Bearer {full_key}",
                "--phases",
                "examples,coverage,fuzzing",
                "--mode",
                "all",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    report = outcome.stdout + outcome.stderr
    assert outcome.returncode == 0, report
    assert "No issues found" in report or " passed" in report, report
