"""Where a result computation runs: a thread of the caller's process, or a process of
its own.

A job is an async function of a Redis client. :class:`Threads` runs it on a thread
with an event loop and a client of its own, so the caller's loop keeps serving
meanwhile, but its Python still holds the caller's GIL: enough for computations from
the counters (milliseconds), not for a per-visitor scan. Parsing every visitor's state
is seconds of pure Python; two scans on threads of the API process held its GIL 89 %
of the time (py-spy, BENCHMARKS.md "Scan flood and back-pressure") and slowed its
default result from milliseconds to a p99 of seconds. :class:`Processes` runs jobs in
spawned processes, each with one event loop and one Redis client for its life; the
job and its result cross by pickle, so a job is a module-level function (or a
``functools.partial`` of one) of picklable arguments.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol, TypeVar

from worker.config import Settings
from worker.store.connection import Redis, connect

T = TypeVar("T")

Job = Callable[[Redis], Awaitable[T]]
"""A computation given a Redis client of the loop it runs on."""


class Runner(Protocol):
    """Runs a job off the caller's event loop and returns its result."""

    def run(self, job: Job[T], /) -> Awaitable[T]:
        """The job's result (its exception, if it raised)."""
        ...


class Threads:
    """Jobs on threads of ``executor`` (None: the caller's loop's default pool), each
    with a new event loop and a new client from ``connect``: a client belongs to the
    loop it was made on."""

    def __init__(self, connect: Callable[[], Redis], executor: Executor | None = None) -> None:
        self._connect = connect
        self._executor = executor

    async def run(self, job: Job[T]) -> T:
        """The job's result, computed on a thread."""

        async def with_client() -> T:
            async with self._connect() as redis:
                return await job(redis)

        def run() -> T:
            # The coroutine is made on the thread too: cancelled before the thread starts,
            # none is left never awaited.
            return asyncio.run(with_client())

        # What asyncio.to_thread does, on the chosen executor.
        call = functools.partial(contextvars.copy_context().run, run)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


class Processes:
    """Jobs in at most ``count`` spawned processes (started on first use), each with
    its own event loop and Redis client (``settings``), run at ``niceness``: above 0
    the kernel gives the CPU to the caller's process first when both want it.

    A process that dies (killed, out of memory) breaks a ``ProcessPoolExecutor`` for
    good; the pool is then replaced, so only the jobs that were running fail.
    """

    def __init__(self, settings: Settings, count: int, niceness: int = 0) -> None:
        self._settings = settings
        self._count = count
        self._niceness = niceness
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: a fork of the API process would copy its event loop, its
        # threads' locks and its Redis connections.
        return ProcessPoolExecutor(
            self._count,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_process,
            initargs=(self._settings, self._niceness),
        )

    async def run(self, job: Job[T]) -> T:
        """The job's result, computed in one of the processes."""
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, _run_job, job)
        except BrokenProcessPool:
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            raise

    def close(self) -> None:
        """Stop the processes once the running jobs are done; queued ones are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)


PARENT_CHECK_SECONDS = 1.0
"""How often a pool process checks that the process that started it still runs."""

_process_state: tuple[asyncio.AbstractEventLoop, Redis] | None = None
"""The event loop and client of a :class:`Processes` process (None elsewhere)."""


def _start_process(settings: Settings, niceness: int) -> None:
    global _process_state
    os.nice(niceness)
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    # Ctrl-C reaches the whole process group; the parent stops the pool itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    _process_state = (loop, connect(settings))


def _exit_with(parent: int) -> None:
    """End this process once ``parent`` is gone. A pool process holds both ends of its
    own job queue, so it never reads the end of it: a parent killed before it stopped
    its pool (SIGKILL, a crash) would leave it waiting for ever."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _run_job(job: Job[T]) -> T:
    if _process_state is None:
        raise RuntimeError("a Processes job ran outside a Processes process")
    loop, redis = _process_state
    return loop.run_until_complete(job(redis))
