"""Commands the local services need, installed from Debian's packages when missing.

A fresh machine has neither Redis nor a Java runtime nor Maven; as root with apt-get
they are installed with progress output, otherwise the error names the exact command
to run (the README's needs are Python 3.11 and make alone)."""

from __future__ import annotations

import os
import shutil
import subprocess

from worker.errors import ProvisioningError

_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
_updated = False
"""Whether this process already ran ``apt-get update`` (once is enough)."""


def ensure_command(command: str, package: str, purpose: str) -> str:
    """The path of ``command``, installing Debian's ``package`` first when it is
    missing; ``purpose`` says in the error what the command is needed for."""
    found = shutil.which(command)
    if found:
        return found
    install = f"apt-get install -y {package}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ProvisioningError(
            f"{command} is not installed and cannot be installed here (not root, or no "
            f"apt-get): run '{install}' as root and run again; {purpose}."
        )
    print(f"Installing Debian's {package} package for {command} (first run only)...", flush=True)
    _apt(["apt-get", "install", "-y", "-q", "--no-install-recommends", package])
    found = shutil.which(command)
    if not found:
        raise ProvisioningError(f"{package} was installed but {command} is not on PATH.")
    print(f"  done: {command} at {found}", flush=True)
    return found


def _apt(install: list[str]) -> None:
    global _updated
    steps = ([] if _updated else [["apt-get", "update", "-q"]]) + [install]
    for step in steps:
        result = subprocess.run(
            step, env={**os.environ, **_APT_ENV}, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ProvisioningError(f"'{' '.join(step)}' failed: {result.stderr.strip()[-300:]}")
        if step[1] == "update":
            _updated = True
