"""Fixtures of the integration tests: real services, an isolated namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack

import pytest
from redis.asyncio import Redis

from tests.integration.harness import (
    Namespace,
    RunningCluster,
    WorkerProcesses,
    cluster_services,
    delete_keys,
    delete_topics,
)
from tests.integration.services import Endpoints, resolve
from worker.config import Settings
from worker.services import cluster


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    with ExitStack() as stack:
        try:
            found = resolve(stack)
        except Exception as error:  # a missing broker is a failure, never a skip
            pytest.fail(f"integration services unavailable: {error}", pytrace=False)
        print(f"\nintegration services ({found.origin}): kafka {found.kafka}, redis {found.redis}")
        yield found


@pytest.fixture
def namespace(endpoints: Endpoints) -> Iterator[Namespace]:
    """Topics, consumer group and Redis key prefix of this test alone; its keys are
    deleted afterwards so that repeated local runs do not fill the shared Redis."""
    namespace = Namespace.create(endpoints, f"t{uuid.uuid4().hex[:10]}")
    yield namespace
    delete_keys(namespace.settings.redis_url, namespace.settings.key_prefix)
    delete_topics(namespace.settings.kafka_bootstrap_servers, namespace.name)


@pytest.fixture
async def redis(namespace: Namespace) -> AsyncIterator[Redis]:
    client = Redis.from_url(namespace.settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def workers(
    request: pytest.FixtureRequest,
    namespace: Namespace,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcesses]:
    # Parametrised indirectly (harness.ENGINES) by the tests that run on both engines.
    engine = getattr(request, "param", None)
    processes = WorkerProcesses(namespace, tmp_path_factory.mktemp("worker-logs"), engine)
    yield processes
    processes.stop_all()


@pytest.fixture(scope="session")
def cluster_topology() -> Iterator[RunningCluster]:
    """The cluster topology, started once per session for every test marked `cluster`
    (in the project's services directory, so that a topology a developer started is
    used as it is). `up --cluster` is idempotent: it starts only the nodes that are not
    running. What this session started it stops at the end."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")
    }
    settings = Settings.from_env()
    layout = cluster.layout(settings.services_dir, settings.cache_dir)
    up = cluster_services(env, "up")
    if up.returncode != 0:  # a missing cluster is a failure, never a skip
        pytest.fail(f"services up --cluster failed: {up.stdout}{up.stderr}", pytrace=False)
    try:
        yield RunningCluster(env, layout, up.stdout)
    finally:
        if ": started" in up.stdout:
            cluster_services(env, "down")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `stops_cluster` run after every other test: the cluster topology is
    started once per session, and they stop it."""
    items.sort(key=lambda item: item.get_closest_marker("stops_cluster") is not None)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
