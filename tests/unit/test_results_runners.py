"""Where result computations run: scans in processes of their own, not the caller's."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.managers import SyncManager
from threading import Barrier

import pytest

from worker.config import Settings
from worker.results.runners import Processes
from worker.store.connection import Redis

# The jobs are module-level: they are pickled to the runner's processes.


async def pid_of_process(_: Redis) -> int:
    return os.getpid()


async def pid_once_all_arrived(barrier: Barrier, _: Redis) -> int:
    barrier.wait()  # every job at once: fewer processes than jobs never get past this
    return os.getpid()


async def die(_: Redis) -> None:
    os._exit(3)


async def fail(_: Redis) -> None:
    raise ValueError("the job's own error")


@pytest.fixture
def manager() -> Iterator[SyncManager]:
    with multiprocessing.get_context("spawn").Manager() as manager:
        yield manager


@pytest.fixture
def processes() -> Iterator[Processes]:
    # The client connects lazily: none of these jobs uses it, so no Redis is needed.
    runner = Processes(Settings.from_env(), 2)
    yield runner
    runner.close()


async def test_jobs_run_in_other_processes_as_many_at_once_as_asked(
    processes: Processes, manager: SyncManager
) -> None:
    both = manager.Barrier(2, timeout=60)
    pids = await asyncio.gather(
        *(processes.run(functools.partial(pid_once_all_arrived, both)) for _ in range(2))
    )
    assert len(set(pids)) == 2 and os.getpid() not in pids
    # The processes live on: the next job runs in one of them.
    assert await processes.run(pid_of_process) in pids


async def test_a_job_error_reaches_the_caller(processes: Processes) -> None:
    with pytest.raises(ValueError, match="the job's own error"):
        await processes.run(fail)
    assert await processes.run(pid_of_process) != os.getpid()


async def test_a_process_that_dies_fails_its_job_and_the_next_jobs_still_run(
    processes: Processes,
) -> None:
    with pytest.raises(BrokenProcessPool):
        await processes.run(die)
    assert await processes.run(pid_of_process) != os.getpid()
