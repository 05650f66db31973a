"""Every Redis client of the project is made here: the worker's, the API's, the CLI's.

One place sets the timeouts (``AB_REDIS_TIMEOUT_SECONDS``), so a Redis that hangs
raises ``TimeoutError`` after that long, which every caller takes for Redis being
unavailable (the worker retries, the API answers 503, the CLI says so) instead of
waiting for ever. A Redis Cluster client will plug in here too. Outside ``worker/store/``
a client is only passed on to store functions, and these names stand for redis-py's.
"""

from __future__ import annotations

import redis
import redis.exceptions
from redis.asyncio import Redis

from worker.config import Settings

__all__ = ["REDIS_UNAVAILABLE", "Redis", "RedisError", "answers", "connect", "ping"]

RedisError = redis.exceptions.RedisError
"""Every error a Redis call raises."""

REDIS_UNAVAILABLE: tuple[type[RedisError], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
"""What a Redis call raises when Redis does not answer (in time): transient."""


def connect(settings: Settings) -> Redis:
    """A client of the settings' Redis, with their timeouts. It connects lazily, so a
    process starts (and the API's /healthz reports) without Redis."""
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=settings.redis_health_check_seconds,
    )


async def ping(client: Redis) -> None:
    """Return when Redis answers a PING; raise a ``RedisError`` otherwise."""
    await client.ping()


def answers(url: str, timeout_seconds: float = 2.0) -> bool:
    """True when a Redis server at this URL answers PING within the timeout.

    Blocking, for the checks made before any event loop runs (the provisioner, `run`).
    """
    try:
        with redis.Redis.from_url(
            url, socket_connect_timeout=timeout_seconds, socket_timeout=timeout_seconds
        ) as client:
            return bool(client.ping())
    except RedisError:
        return False
