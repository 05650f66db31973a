"""Background processes tracked by pid files, so `down` stops only what `up` started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process: with the pid it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rpartition(")")[2].split()
    # fields[0] is the state (field 3 of stat); the start time is field 22.
    return None if fields[0] == "Z" else fields[19]


def read_pid(pid_file: Path) -> int | None:
    """The pid in the file if that process still runs and is the one we started."""
    try:
        pid_text, started = pid_file.read_text().split()
        pid = int(pid_text)
    except (FileNotFoundError, ValueError):
        return None
    # A recycled pid belongs to someone else: its start time differs from ours.
    return pid if _start_time(pid) == started else None


def start_background(
    command: Sequence[str], pid_file: Path, log_file: Path
) -> subprocess.Popen[bytes]:
    """Start a detached process that outlives this one, logging to a file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid} {_start_time(process.pid)}\n")
    return process


def stop(pid_file: Path, timeout_seconds: float = 30.0) -> bool:
    """Stop the process of a pid file: SIGTERM, then SIGKILL after the timeout."""
    return stop_all([pid_file], timeout_seconds)[0]


def stop_all(pid_files: Sequence[Path], timeout_seconds: float = 30.0) -> list[bool]:
    """Stop the processes of these pid files together: SIGTERM to each, then SIGKILL to
    those still running after the timeout. Returns, per file, whether its process ran.

    Together, not one after another: the nodes of a cluster wait for each other while
    shutting down, and the last broker of a quorum stopped alone would wait in vain.
    """
    pids = {pid_file: read_pid(pid_file) for pid_file in pid_files}
    running = {pid_file: pid for pid_file, pid in pids.items() if pid is not None}
    for pid in running.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and any(read_pid(f) is not None for f in running):
        for pid in running.values():
            _reap(pid)
        time.sleep(0.2)
    lingering = [pid for pid_file, pid in running.items() if read_pid(pid_file) is not None]
    for pid in lingering:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if lingering:
        time.sleep(0.2)
        for pid in lingering:
            _reap(pid)
    for pid_file in pid_files:
        pid_file.unlink(missing_ok=True)
    return [pids[pid_file] is not None for pid_file in pid_files]


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
