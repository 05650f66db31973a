"""Fixtures of the integration tests: real services, an isolated namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack

import pytest
from redis.asyncio import Redis

from tests.integration.harness import Namespace, WorkerProcesses, delete_keys, delete_topics
from tests.integration.services import Endpoints, resolve


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


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
