"""The cluster topology on one machine: three Kafka brokers (KRaft, combined roles) and a
Redis Cluster of three primaries with one replica each, on loopback ports of their own.

It runs beside the single-node topology (ports 19092 and 16379) without touching it,
so that durability can be tried on one machine: a broker or a Redis primary can be
killed and the rest carry on. docker-compose.yml's `cluster` profile has the same
nodes on the same ports.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from worker.errors import ProvisioningError
from worker.services import debian_packages, kafka_server, redis_server
from worker.services.kafka_server import KafkaLayout
from worker.services.redis_server import RedisLayout

HOST = "127.0.0.1"
KAFKA_PORTS = (29092, 29094, 29096)
"""Client ports of brokers 1, 2 and 3; each one's controller listens one port above."""
KAFKA_HEAP = "-Xmx512m"
"""Three JVMs on a small machine: each broker's heap is capped at 512 MB."""
REDIS_PORTS = (26379, 26380, 26381, 26382, 26383, 26384)
"""Redis nodes; each one's cluster bus listens CLUSTER_BUS_OFFSET ports above."""
REDIS_REPLICAS_PER_PRIMARY = 1


@dataclass(frozen=True)
class ClusterLayout:
    """Every node of the cluster topology and where its files live."""

    kafka: tuple[KafkaLayout, ...]
    redis: tuple[RedisLayout, ...]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.kafka)

    @property
    def redis_url(self) -> str:
        """One node's URL: a cluster client discovers the others from it."""
        return self.redis[0].url

    def environment(self) -> dict[str, str]:
        """The variables that point the worker, the API and the CLI at this cluster."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "REDIS_URL": self.redis_url,
            "AB_REPLICATION_FACTOR": str(len(self.kafka)),
            "AB_REDIS_CLUSTER": "1",
        }


def layout(services_dir: Path, cache_dir: Path) -> ClusterLayout:
    """The cluster's nodes, with their state under `services_dir`/cluster."""
    root = services_dir / "cluster"
    kafka = tuple(
        KafkaLayout(
            cache_dir=cache_dir,
            state_dir=root / f"kafka-{node_id}",
            host=HOST,
            port=port,
            node_id=node_id,
            peer_ports=KAFKA_PORTS,
            heap=KAFKA_HEAP,
        )
        for node_id, port in enumerate(KAFKA_PORTS, start=1)
    )
    redis = tuple(
        RedisLayout(state_dir=root / f"redis-{port}", host=HOST, port=port, cluster=True)
        for port in REDIS_PORTS
    )
    return ClusterLayout(kafka, redis)


@dataclass(frozen=True)
class RedisNode:
    """One line of CLUSTER NODES."""

    node_id: str
    address: str
    """host:port of its clients (the bus port and host name are dropped)."""
    flags: frozenset[str]
    primary_id: str | None
    """The primary it replicates; None for a primary."""
    slots: tuple[str, ...]

    @property
    def role(self) -> str:
        if "fail" in self.flags:
            return "failed"
        return "replica" if "slave" in self.flags else "primary"


def parse_cluster_nodes(text: str) -> list[RedisNode]:
    """The nodes of a CLUSTER NODES reply (one node a line, fields separated by spaces)."""
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split("@", 1)[0]
        primary = None if fields[3] == "-" else fields[3]
        nodes.append(
            RedisNode(
                fields[0], address, frozenset(fields[2].split(",")), primary, tuple(fields[8:])
            )
        )
    return nodes


def describe_redis_node(node: RedisLayout) -> str | None:
    """The node's role as it says itself: "primary, slots 0-5460" or "replica of
    127.0.0.1:26379"; None when it does not answer."""
    reply = redis_cli(node, "cluster", "nodes")
    if reply is None:
        return None
    nodes = parse_cluster_nodes(reply)
    me = next((n for n in nodes if "myself" in n.flags), None)
    if me is None:
        return None
    if me.role == "replica":
        by_id = {n.node_id: n.address for n in nodes}
        return f"replica of {by_id.get(me.primary_id or '', me.primary_id)}"
    return f"{me.role}, slots {' '.join(me.slots) or 'none'}"


def parse_info(text: str) -> dict[str, str]:
    """`name:value` lines of an INFO-style reply (CLUSTER INFO) as a mapping."""
    pairs = (line.strip().split(":", 1) for line in text.splitlines() if ":" in line)
    return {name: value for name, value in pairs}


def redis_cli(node: RedisLayout, *command: str) -> str | None:
    """A command's reply through redis-cli (None when the node does not answer).

    redis-cli rather than a client library: it also creates the cluster, and only
    worker/store talks to Redis from Python.
    """
    try:
        result = subprocess.run(
            [_redis_cli_binary(), "-h", node.host, "-p", str(node.port), *command],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0 or result.stdout.startswith(("Could not connect", "ERR")):
        return None
    return result.stdout


def _redis_cli_binary() -> str:
    return debian_packages.ensure_command("redis-cli", "redis-tools", "it creates the cluster")


def cluster_info(node: RedisLayout) -> dict[str, str]:
    """The node's CLUSTER INFO; empty when it does not answer."""
    reply = redis_cli(node, "cluster", "info")
    return parse_info(reply) if reply else {}


def redis_cluster_ready(nodes: tuple[RedisLayout, ...]) -> bool:
    """Every node reports cluster_state:ok and knows every other node."""
    for node in nodes:
        info = cluster_info(node)
        if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != str(len(nodes)):
            return False
    return True


def create_redis_cluster(nodes: tuple[RedisLayout, ...]) -> bool:
    """Join the started nodes into one cluster unless they already form one; True when
    this call created it. The first nodes become primaries, the others their replicas."""
    if any(int(cluster_info(node).get("cluster_known_nodes", "1")) > 1 for node in nodes):
        return False  # created before: nodes.conf brought the membership back
    result = subprocess.run(
        [
            _redis_cli_binary(), "--cluster", "create",
            *(f"{node.host}:{node.port}" for node in nodes),
            "--cluster-replicas", str(REDIS_REPLICAS_PER_PRIMARY), "--cluster-yes",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    if result.returncode != 0:
        raise ProvisioningError(
            f"redis-cli --cluster create failed: {(result.stdout + result.stderr).strip()[-400:]}"
        )
    return True


def kafka_cluster_ready(nodes: tuple[KafkaLayout, ...]) -> bool:
    """Every broker answers, and each one's metadata lists every broker."""
    expected = tuple(node.node_id for node in nodes)
    for node in nodes:
        view = kafka_server.cluster_view(node.bootstrap)
        if view is None or view.broker_ids != expected:
            return False
    return True


def start(cluster: ClusterLayout, partitions: int, timeout_seconds: float = 180.0) -> list[str]:
    """Start every node that is not running, form the Redis Cluster, and return once
    Kafka's metadata lists three brokers and Redis reports cluster_state:ok."""
    lines = []
    # Redis first: its nodes start in milliseconds, and the cluster forms while the
    # JVMs start.
    for redis_node in cluster.redis:
        outcome = redis_server.start(redis_node)
        lines.append(f"redis {redis_node.host}:{redis_node.port}: {outcome}")
    if create_redis_cluster(cluster.redis):
        lines.append(
            f"redis: cluster created, {len(cluster.redis) // (REDIS_REPLICAS_PER_PRIMARY + 1)} "
            f"primaries with {REDIS_REPLICAS_PER_PRIMARY} replica each"
        )
    cluster_id = next(
        filter(None, (kafka_server.formatted_cluster_id(node) for node in cluster.kafka)),
        kafka_server.new_cluster_id(),
    )
    # Every broker is launched before any is waited for: a controller quorum of three
    # elects a leader only once two of them run.
    launched = [(node, kafka_server.launch(node, partitions, cluster_id)) for node in cluster.kafka]
    kafka_server.wait_until(lambda: kafka_cluster_ready(cluster.kafka), launched, timeout_seconds)
    for node, process in launched:
        outcome = "started" if process is not None else "already running"
        lines.append(f"kafka {node.bootstrap} (node {node.node_id}): {outcome}")
    deadline = time.monotonic() + timeout_seconds
    while not redis_cluster_ready(cluster.redis):
        if time.monotonic() > deadline:
            logs = ", ".join(str(node.log_file) for node in cluster.redis)
            raise ProvisioningError(
                f"The Redis Cluster did not reach cluster_state:ok within {timeout_seconds:.0f} s; see {logs}."
            )
        time.sleep(0.5)
    return lines
