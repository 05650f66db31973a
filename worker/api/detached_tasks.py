"""Work a request starts and does not wait for, drained when the app shuts down."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class DetachedTasks:
    """Tasks that outlive the request that started them (Kameleoon's computations).

    They are held here until done, as the event loop keeps only weak references to
    tasks, and :meth:`drain` settles them at shutdown, so none is destroyed pending.
    """

    def __init__(self) -> None:
        self._running: set[asyncio.Task[None]] = set()

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background."""
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def drain(self, grace_seconds: float) -> None:
        """Wait up to ``grace_seconds`` for the running tasks to finish, then cancel the
        others and wait until they have handled the cancellation."""
        if not self._running:
            return
        _, late = await asyncio.wait(set(self._running), timeout=grace_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
