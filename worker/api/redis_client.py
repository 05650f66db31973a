"""The API's Redis clients, all with the same timeouts."""

from __future__ import annotations

from redis.asyncio import Redis

from worker.config import Settings

REDIS_TIMEOUT_SECONDS = 5.0


def connect(settings: Settings) -> Redis:
    """A client of the settings' Redis. It connects lazily, so the app starts (and
    /healthz reports) without Redis."""
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
