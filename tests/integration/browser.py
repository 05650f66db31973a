"""Headless Chromium for the page tests: installed from Debian's `chromium` package when
missing (a missing browser fails the test, never skips it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

INSTALL_SECONDS = 600
RUN_SECONDS = 60
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
WINDOW = (1280, 1600)
"""Width and height of the window, in CSS pixels, unless a call sets its own."""


def chromium() -> str:
    """The chromium executable, installed with apt-get if needed; RuntimeError if it
    cannot be."""
    found = shutil.which("chromium")
    if found:
        return found
    install = ["apt-get", "install", "-y", "chromium"]
    for commands in ([install], [["apt-get", "update"], install]):
        for command in commands:
            subprocess.run(command, capture_output=True, timeout=INSTALL_SECONDS, check=False)
        found = shutil.which("chromium")
        if found:
            return found
    raise RuntimeError("chromium is not installed and `apt-get install -y chromium` failed.")


def _run(profile: Path, *arguments: str, window: tuple[int, int] = WINDOW) -> str:
    size = f"--window-size={window[0]},{window[1]}"
    completed = subprocess.run(
        [chromium(), *FLAGS, size, f"--user-data-dir={profile}", *arguments],
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"chromium failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return completed.stdout


def dump_dom(url: str, profile: Path) -> str:
    """The DOM of ``url`` after Chromium rendered it, as HTML text."""
    return _run(profile, "--dump-dom", url)


def screenshot(url: str, path: Path, profile: Path, window: tuple[int, int] = WINDOW) -> None:
    """Save a PNG of ``url`` as Chromium renders it in a window of ``window`` (width,
    height) CSS pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(profile, f"--screenshot={path}", url, window=window)
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot to {path}.")
