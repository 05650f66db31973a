"""Waiting for Redis or Kafka, out loud: a warning at least every 10 s while one is down.

Every place where the worker waits on a service reports here: the pipeline's retries
(`retry_transient`, used by `pipeline._retrying` and the experiment registry) and the
runtime's monitor, which probes both services every few seconds whatever the traffic
(an idle consumer loop sees no error of its own while the broker is down: aiokafka
reconnects inside `getmany` and logs on its own logger). A tracker per service warns
at once when an outage starts, then every `WARN_EVERY_SECONDS` (AB_OUTAGE_WARN_SECONDS
sets another interval) while it lasts (the runtime calls `remind_all` every second),
saying what is waited for and since when, and logs once more when the service answers
again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from aiokafka.errors import KafkaError

from worker.ingestion import metrics
from worker.store.connection import REDIS_UNAVAILABLE, RedisError

log = logging.getLogger(__name__)

WARN_EVERY_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 5.0
T = TypeVar("T")

TRANSIENT = (*REDIS_UNAVAILABLE, KafkaError, OSError)
"""What a call raises while Redis or Kafka does not answer (in time): waited out, retried."""


def _monotonic() -> float:
    return time.monotonic()


def _wall() -> datetime:
    return datetime.now(UTC)


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class Outage:
    """One service the worker may wait for, and whether (since when) it is waiting."""

    def __init__(self, service: str, label: str) -> None:
        self.service = service
        self.label = label  # the `service` label of ab_worker_retries_total
        self.address = ""
        self.warn_every = WARN_EVERY_SECONDS
        self.since: float | None = None
        self.since_wall: datetime | None = None
        self.warned_at = 0.0
        self.waiting_for = ""
        self.last_error = ""

    @property
    def down(self) -> bool:
        return self.since is not None

    def describe(self) -> str:
        return f"{self.service} at {self.address}" if self.address else self.service

    def failed(self, error: BaseException | str, waiting_for: str) -> None:
        """A call to the service failed (or got no answer in time)."""
        now = _monotonic()
        self.last_error = error if isinstance(error, str) else _error_text(error)
        self.waiting_for = waiting_for
        if self.since is None:
            self.since, self.since_wall = now, _wall()
            self._warn(now)
        else:
            self.remind(now)

    def remind(self, now: float | None = None) -> None:
        """Warn again if the outage lasts and the last warning is `warn_every` seconds old."""
        if self.since is None:
            return
        now = _monotonic() if now is None else now
        if now - self.warned_at >= self.warn_every:
            self._warn(now)

    def recovered(self) -> None:
        """The service answered: end the outage (and say so) if there was one."""
        if self.since is None or self.since_wall is None:
            return
        log.warning(
            "%s answers again, after %.0f s (unreachable since %s)",
            self.describe(),
            _monotonic() - self.since,
            self.since_wall.isoformat(timespec="seconds"),
        )
        self.since = self.since_wall = None
        self.warned_at = 0.0

    def _warn(self, now: float) -> None:
        assert self.since is not None and self.since_wall is not None
        self.warned_at = now
        log.warning(
            "waiting for %s since %s (%.0f s): %s; last error: %s",
            self.describe(),
            self.since_wall.isoformat(timespec="seconds"),
            now - self.since,
            self.waiting_for,
            self.last_error,
        )


REDIS = Outage("Redis", "redis")
KAFKA = Outage("Kafka", "kafka")
EITHER = Outage("Redis or Kafka", "network")
"""For transient errors that name neither (an OSError or a timeout of our own)."""
TRACKERS = (REDIS, KAFKA, EITHER)


def configure(
    redis_url: str, bootstrap: str, warn_every_seconds: float = WARN_EVERY_SECONDS
) -> None:
    """Name the addresses in the warnings (a Redis password never is), and set how
    often a lasting outage is reported again."""
    for tracker in TRACKERS:
        tracker.warn_every = warn_every_seconds
    REDIS.address = redact(redis_url)
    KAFKA.address = bootstrap
    EITHER.address = f"{REDIS.address} or {bootstrap}"
    EITHER.service = "Redis or Kafka"


def redact(url: str) -> str:
    """The URL without its user and password."""
    parts = urlsplit(url)
    if parts.hostname is None or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def tracker_for(error: BaseException) -> Outage:
    """Which service a transient error says is down."""
    if isinstance(error, RedisError):
        return REDIS
    if isinstance(error, KafkaError):
        return KAFKA
    return EITHER


def remind_all() -> None:
    """Called every second by the runtime: keeps the warnings coming while waiting."""
    for tracker in TRACKERS:
        tracker.remind()


async def retry_transient(
    attempt: Callable[[], Awaitable[T]],
    transient: tuple[type[BaseException], ...],
    waiting_for: str,
) -> T:
    """Run `attempt` until it succeeds, backing off (capped) after transient failures.

    Each failure is reported to the tracker of the service it names, which warns at
    once and then at most (here) and at least (through `remind_all`) every
    `warn_every` seconds of its tracker; each retry is counted in ab_worker_retries_total.
    """
    delay = 0.1
    failed: list[Outage] = []
    while True:
        try:
            result = await attempt()
        except transient as error:
            tracker = tracker_for(error)
            tracker.failed(error, waiting_for)
            if tracker not in failed:
                failed.append(tracker)
            metrics.RETRIES.labels(tracker.label).inc()
            log.debug("%s (%s); retrying in %.1f s", waiting_for, error, delay)
            await _sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
            continue
        for tracker in failed:
            tracker.recovered()
        return result


def _error_text(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
