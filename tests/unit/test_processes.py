"""Pid-file bookkeeping: `down` stops only what `up` started."""

from __future__ import annotations

import subprocess
from pathlib import Path

from worker.services import processes


def test_start_read_and_stop_a_background_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper.pid"
    process = processes.start_background(["sleep", "60"], pid_file, tmp_path / "sleeper.log")
    assert processes.read_pid(pid_file) == process.pid
    assert processes.stop(pid_file) is True
    assert process.wait(timeout=5) is not None
    assert processes.read_pid(pid_file) is None
    assert not pid_file.exists()


def test_a_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    pid_file = tmp_path / "other.pid"
    other = subprocess.Popen(["sleep", "60"])
    try:
        # Same pid, but a start time that is not the process's: someone else's process.
        pid_file.write_text(f"{other.pid} 1\n")
        assert processes.read_pid(pid_file) is None
        assert processes.stop(pid_file) is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_stop_without_pid_file_is_harmless(tmp_path: Path) -> None:
    assert processes.stop(tmp_path / "missing.pid") is False
