"""Back-pressure for per-visitor scans: few run at once, in processes of their own.

A scan reads and parses every visitor's state of an experiment: seconds of CPU at a
million visitors. Without a limit a flood of distinct filtered queries made every one
of them wait for all the others (24 s each at 50 in flight), and their threads filled
the event loop's default pool, which the cheap paths (counter computations) use too.
So each API process admits at most ``AB_API_MAX_SCANS`` scans at once; a scan that
cannot start within ``AB_API_SCAN_WAIT_SECONDS`` is refused with a 503 and
``Retry-After`` at once instead of queueing for ever. The admitted ones run in as many
processes (``worker.api.caching.results``), not on threads of the API process, whose
GIL they held most of the time. Only scans are admitted here: snapshots, cached
answers and computations from the counters never wait for a slot.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge

from worker.api.errors import ApiError


def busy_message(slots: int, retry_after: int) -> str:
    """The sentence of a refused scan."""
    scans = "scan" if slots == 1 else "scans"
    return (
        f"Too many queries that need a scan of every visitor are running on this server "
        f"(at most {slots} {scans} at once); try again in {retry_after} s, or ask without "
        f"the filters, breakdowns or options that need the scan."
    )


class ScanLimiter:
    """Admits at most ``slots`` scans at once, each waiting at most ``wait_seconds``
    for its turn."""

    def __init__(self, slots: int, wait_seconds: float, registry: CollectorRegistry) -> None:
        if slots < 1:
            raise ValueError(f"AB_API_MAX_SCANS must be at least 1, got {slots}")
        if wait_seconds < 0:
            raise ValueError(f"AB_API_SCAN_WAIT_SECONDS must not be negative, got {wait_seconds}")
        self.slots = slots
        self.wait_seconds = wait_seconds
        self.retry_after = max(1, math.ceil(wait_seconds))
        """Seconds a refused client is told to wait: by then the scans it waited
        behind have had as long again to finish."""
        self._free = asyncio.Semaphore(slots)
        self._running = Gauge(
            "ab_api_scans_running", "Per-visitor scans running now.", registry=registry
        )
        self._waiting = Gauge(
            "ab_api_scans_waiting", "Per-visitor scans waiting for a slot.", registry=registry
        )
        self._refused = Counter(
            "ab_api_scans_refused",
            "Per-visitor scans refused with a 503 after waiting AB_API_SCAN_WAIT_SECONDS.",
            registry=registry,
        )

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold a slot for the body; ApiError 503 when none frees up in time."""
        with self._waiting.track_inprogress():
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await self._free.acquire()
            except TimeoutError:
                self._refused.inc()
                raise ApiError(
                    503,
                    busy_message(self.slots, self.retry_after),
                    headers={"Retry-After": str(self.retry_after)},
                ) from None
        try:
            with self._running.track_inprogress():
                yield
        finally:
            self._free.release()
