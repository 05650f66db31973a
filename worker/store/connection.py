"""Every Redis client of the project is made here: the worker's, the API's, the CLI's.

One place sets the timeouts (``AB_REDIS_TIMEOUT_SECONDS``), so a Redis that hangs
raises ``TimeoutError`` after that long, which every caller takes for Redis being
unavailable (the worker retries, the API answers 503, the CLI says so) instead of
waiting for ever. Outside ``worker/store/`` a client is only passed on to store
functions, and these names stand for redis-py's.

``REDIS_URL`` names one of three kinds of deployment:

* a Redis server alone (``redis://``, ``rediss://``, ``unix://``): redis-py's client;
* a node of a Redis Cluster (``AB_REDIS_CLUSTER=1``, or found out with ``INFO cluster``):
  redis-py's cluster client, which finds the other nodes and follows the slots;
* a Sentinel-managed primary (``redis+sentinel://host:port[,host:port]/service[/db]``):
  redis-py's client on a connection pool that asks the sentinels for the primary, so
  after a failover the next connection goes to the promoted replica.

What the store does for the cluster: every script's keys share one hash tag and are
declared (apply_batch.lua, record_decisions.lua); pipelines hold single-key commands
only, which the cluster client groups per node and sends to the nodes at once; a
WATCH transaction (rollups.py) watches and writes keys of one slot; key scans run on
every primary (``scan_batches``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.exceptions
import redis.sentinel
from redis.asyncio.cluster import RedisCluster

from worker.config import Settings

__all__ = [
    "REDIS_UNAVAILABLE",
    "Redis",
    "RedisError",
    "answers",
    "connect",
    "is_cluster",
    "ping",
    "scan_batches",
]

Redis: TypeAlias = redis.asyncio.Redis | RedisCluster
"""A client of a Redis server alone (or a Sentinel-managed primary), or of a Cluster."""

RedisError: tuple[type[Exception], ...] = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
)
"""Every error a Redis call raises: redis-py's, and its cluster client's own (which is
not one of them), for ``except`` and ``isinstance``."""

REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    # A Cluster between a primary's failure and its replica's promotion answers
    # CLUSTERDOWN (MASTERDOWN), TRYAGAIN, or leaves a slot without a node.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterError,
    # The cluster client raises this when no node answers or the slots are not all
    # covered. It also names commands it cannot route, such as keys
    # of several slots in one command; the store sends none (tests/integration/test_redis_cluster.py).
    redis.exceptions.RedisClusterException,
)
"""What a Redis call raises when Redis does not answer (in time): transient."""

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


def _timeouts(timeout_seconds: float) -> dict[str, float]:
    return {"socket_timeout": timeout_seconds, "socket_connect_timeout": timeout_seconds}


def connect(settings: Settings) -> Redis:
    """A client of the settings' Redis (alone, Sentinel-managed or a Cluster), with their
    timeouts. It connects lazily, so a process starts (and the API's /healthz reports)
    without Redis; only finding out whether REDIS_URL is a Cluster node asks it once
    (see ``is_cluster``)."""
    options: dict[str, Any] = {
        **_timeouts(settings.redis_timeout_seconds),
        "health_check_interval": settings.redis_health_check_seconds,
    }
    url = settings.redis_url
    if _is_sentinel(url):
        sentinels, service, db, password = _sentinel_parts(url)
        manager = redis.asyncio.sentinel.Sentinel(
            sentinels, sentinel_kwargs=_timeouts(settings.redis_timeout_seconds)
        )
        primary: redis.asyncio.Redis = manager.master_for(
            service, db=db, password=password, **options
        )
        return primary
    cluster = settings.redis_cluster
    if cluster is None:
        cluster = is_cluster(url, settings.redis_timeout_seconds)
    if cluster:
        return RedisCluster.from_url(url, **options)
    return redis.asyncio.Redis.from_url(url, **options)


_found_clusters: dict[str, bool] = {}
"""URL -> whether it names a Cluster node, once a server said so (per process)."""


def is_cluster(url: str, timeout_seconds: float = 2.0) -> bool:
    """Whether the server at ``url`` runs in cluster mode (``INFO cluster`` says
    ``cluster_enabled:1``). Asked once per process and URL; a server that does not
    answer counts as a server alone and is asked again next time, so a process made
    while a Cluster is down needs AB_REDIS_CLUSTER=1.

    Blocking (one round trip): a client is made before, or beside, an event loop.
    """
    if _is_sentinel(url):
        return False  # Sentinel manages a primary and its replicas, never a Cluster
    found = _found_clusters.get(url)
    if found is None:
        try:
            with redis.Redis.from_url(url, **_timeouts(timeout_seconds)) as client:
                info = client.info("cluster")
        except RedisError:
            return False
        found = _found_clusters[url] = info.get("cluster_enabled") == 1
    return found


async def ping(client: Redis) -> None:
    """Return when Redis answers a PING; raise one of ``RedisError`` otherwise."""
    await client.ping()


def answers(url: str, timeout_seconds: float = 2.0) -> bool:
    """True when a Redis server at this URL (a Sentinel URL: its primary) answers PING
    within the timeout.

    Blocking, for the checks made before any event loop runs (the provisioner, `run`).
    """
    try:
        if _is_sentinel(url):
            sentinels, service, db, password = _sentinel_parts(url)
            manager = redis.sentinel.Sentinel(sentinels, sentinel_kwargs=_timeouts(timeout_seconds))
            with manager.master_for(
                service, db=db, password=password, **_timeouts(timeout_seconds)
            ) as client:
                return bool(client.ping())
        with redis.Redis.from_url(url, **_timeouts(timeout_seconds)) as client:
            return bool(client.ping())
    except RedisError:
        return False


def _is_sentinel(url: str) -> bool:
    return urlsplit(url).scheme == SENTINEL_SCHEME


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """(sentinel addresses, service name, db, the primary's password) of
    ``redis+sentinel://[:password@]host[:port][,host[:port]...]/service[/db]``."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    password = unquote(credentials.partition(":")[2]) if credentials else ""
    sentinels = []
    for address in hosts.split(","):
        host, _, port = address.rpartition(":") if ":" in address else (address, "", "")
        sentinels.append((host, int(port) if port else DEFAULT_SENTINEL_PORT))
    service, _, db = parts.path.strip("/").partition("/")
    if not service or not hosts:
        raise ValueError(
            f"a Sentinel REDIS_URL is {SENTINEL_SCHEME}://host:port[,host:port]/service[/db], got {url!r}"
        )
    return sentinels, service, int(db or 0), password or None


async def scan_batches(redis: Redis, pattern: str, count: int) -> AsyncIterator[list[bytes]]:
    """The keys matching ``pattern`` (SCAN's MATCH), about ``count`` at a time; on a
    Cluster, those of every primary (redis-py's cluster scan_iter walks each one's
    cursor)."""
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=count):
        batch.append(key)
        if len(batch) >= count:
            yield batch
            batch = []
    if batch:
        yield batch
