"""A Redis server from Debian's `redis-server` package, with AOF on, on loopback."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from worker.errors import ProvisioningError
from worker.services import debian_packages, processes
from worker.store import connection


@dataclass(frozen=True)
class RedisLayout:
    """Where the configuration, AOF files and log of the local Redis live."""

    state_dir: Path
    host: str
    port: int
    cluster: bool = False
    """A node of a Redis Cluster (worker/services/cluster.py), not a server alone."""

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "redis.pid"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "redis.conf"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


def ensure_binary() -> str:
    """Path of redis-server, installing Debian's package when it is missing."""
    return debian_packages.ensure_command(
        "redis-server", "redis-server", "or set REDIS_URL to a running Redis"
    )


ENCODING_LIMITS = {"hash-max-listpack-value": "512", "set-max-intset-entries": "2048"}
"""The compact-encoding limits the key layout is sized for (see write_config)."""


CLUSTER_SETTINGS = (
    "cluster-enabled yes",
    "cluster-config-file nodes.conf",
    # A replica is promoted once its primary has not answered for this long.
    "cluster-node-timeout 5000",
)
"""A cluster node's own lines; nodes.conf (in the node's dir) is Redis's to write."""

CLUSTER_BUS_OFFSET = 1000
"""A cluster node's bus port is its port + this, not Redis's default + 10000: that put
the buses of 26379-26384 inside Linux's ephemeral port range (32768-60999), where a
client connection that closed a moment ago (TIME_WAIT) could hold one and stop the
node from starting."""


def write_config(layout: RedisLayout) -> None:
    """AOF with fsync every second: at most one second of writes is lost on a power cut.

    Also raises two compact-encoding limits the key layout is sized for (apply_batch.lua):
    a visitor bucket holding a visitor with many goal events (a packed state over 64
    bytes) stays a listpack, and a de-duplication bucket stays an intset up to 2,048
    event fingerprints (about half a million events per partition and day). Without them
    (a Redis provisioned elsewhere) everything still works; such buckets take the
    hashtable encoding, about 2-3 times and 5 times the memory.
    """
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    layout.config_file.write_text(
        "\n".join(
            [
                f"bind {layout.host}",
                f"port {layout.port}",
                "protected-mode yes",
                "daemonize no",
                f"dir {layout.state_dir}",
                f"logfile {layout.log_file}",
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                *(f"{name} {value}" for name, value in ENCODING_LIMITS.items()),
                *(CLUSTER_SETTINGS if layout.cluster else ()),
                *([f"cluster-port {layout.port + CLUSTER_BUS_OFFSET}"] if layout.cluster else []),
                "",
            ]
        )
    )


def start(layout: RedisLayout, timeout_seconds: float = 30.0) -> str:
    """Start Redis unless ours already runs; return once it answers PING."""
    if processes.read_pid(layout.pid_file) is not None and connection.answers(layout.url):
        return "already running"
    binary = ensure_binary()
    write_config(layout)
    process = None
    if processes.read_pid(layout.pid_file) is None:
        if connection.answers(layout.url):
            raise ProvisioningError(
                f"Something else already listens on {layout.host}:{layout.port}: stop it, "
                "or point the project at it with the environment variable."
            )
        process = _launch(binary, layout)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if connection.answers(layout.url):
            return "started"
        if process is not None and process.poll() is not None:
            raise ProvisioningError(
                f"redis-server exited during start-up; its log is {layout.log_file}."
            )
        time.sleep(0.2)
    raise ProvisioningError(
        f"Redis did not answer within {timeout_seconds:.0f} s; its log is {layout.log_file}."
    )


def _launch(binary: str, layout: RedisLayout) -> subprocess.Popen[bytes]:
    return processes.start_background(
        [binary, str(layout.config_file)], layout.pid_file, layout.state_dir / "redis.stdout"
    )
