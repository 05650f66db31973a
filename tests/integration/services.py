"""Where the integration tests find Kafka and Redis.

In order: the environment (KAFKA_BOOTSTRAP_SERVERS and REDIS_URL); testcontainers
when a Docker engine answers; else the project's own provisioner (Kafka from the
Maven Central jars, Redis from Debian). A broker that cannot be reached fails the
run: integration tests never skip.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass

from worker.config import Settings
from worker.services import kafka_server, provision
from worker.store import connection


@dataclass(frozen=True)
class Endpoints:
    kafka: str
    redis: str
    origin: str


def _docker_answers() -> bool:
    try:
        import docker

        return bool(docker.from_env(timeout=3).ping())
    except Exception:
        return False


def _from_testcontainers(stack: ExitStack) -> Endpoints:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    kafka = stack.enter_context(KafkaContainer("apache/kafka:3.9.1").with_kraft())
    redis = stack.enter_context(RedisContainer("redis:7.4"))
    redis_url = f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0"
    return Endpoints(kafka.get_bootstrap_server(), redis_url, "testcontainers")


def resolve(stack: ExitStack) -> Endpoints:
    """Find or start the services; raise RuntimeError when they cannot be reached."""
    kafka_env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    redis_env = os.environ.get("REDIS_URL")
    if kafka_env and redis_env:
        endpoints = Endpoints(kafka_env, redis_env, "environment")
    elif _docker_answers():
        endpoints = _from_testcontainers(stack)
    else:
        settings = Settings.from_env()
        provision.up(settings)
        endpoints = Endpoints(
            settings.kafka_bootstrap_servers, settings.redis_url, "local provisioner"
        )
    if not kafka_server.answers(endpoints.kafka):
        raise RuntimeError(f"Kafka at {endpoints.kafka} ({endpoints.origin}) does not answer")
    if not connection.answers(endpoints.redis):
        raise RuntimeError(f"Redis at {endpoints.redis} ({endpoints.origin}) does not answer")
    return endpoints
