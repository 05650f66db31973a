"""Concurrent reads of the same Redis data share one round trip, without staleness.

A read started earlier may miss a write that completed before a later request
arrived, so a request never joins a read already on the wire: it waits for the next
one, which starts as soon as the current one returns and serves every request that
arrived meanwhile. Each answer therefore comes from a read that began after the
request did (read-after-write holds), and under load there is at most one read of a
given kind in flight per process instead of one per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedReads(Generic[T]):
    """Batches concurrent reads by a key describing what they read."""

    def __init__(self) -> None:
        self._next: dict[Hashable, tuple[asyncio.Future[T], Callable[[], Awaitable[T]]]] = {}
        self._running: dict[Hashable, asyncio.Task[None]] = {}

    async def read(self, key: Hashable, reader: Callable[[], Awaitable[T]]) -> T:
        """The result of ``reader()`` run by a read that starts after this call;
        callers with equal ``key`` must pass equivalent readers."""
        waiting = self._next.get(key)
        if waiting is None:
            waiting = (asyncio.get_running_loop().create_future(), reader)
            self._next[key] = waiting
            if key not in self._running:
                self._running[key] = asyncio.create_task(self._drain(key))
        # shield: one caller going away must not cancel the read others wait for.
        return await asyncio.shield(waiting[0])

    async def _drain(self, key: Hashable) -> None:
        """Run the pending read of ``key`` until nobody is waiting for a next one."""
        try:
            while key in self._next:
                future, reader = self._next.pop(key)
                try:
                    future.set_result(await reader())
                except Exception as error:  # every waiter gets the same error
                    future.set_exception(error)
                    future.exception()  # retrieved: waiters that left would log it
        finally:
            del self._running[key]
