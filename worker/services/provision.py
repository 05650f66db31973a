"""`services up|down|status`: local Kafka and Redis unless the environment names others."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from worker.config import DEFAULT_KAFKA, DEFAULT_REDIS, Settings
from worker.services import cluster, kafka_server, processes, redis_server
from worker.store import connection


@dataclass(frozen=True)
class ServiceStatus:
    """One service: where it is, whether we manage it, whether it answers."""

    name: str
    address: str
    managed: bool
    pid: int | None
    answering: bool
    role: str = ""
    """A cluster node's part in its cluster (empty for a single node)."""

    def describe(self) -> str:
        owner = (
            f"local, pid {self.pid}"
            if self.managed and self.pid
            else ("local, not running" if self.managed else "external (from the environment)")
        )
        state = "answering" if self.answering else "NOT answering"
        role = f"{self.role:<32} " if self.role else ""
        return f"{self.name:<6} {self.address:<28} {owner:<22} {role}{state}"


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def kafka_layout(settings: Settings) -> kafka_server.KafkaLayout:
    host, port = _host_port(DEFAULT_KAFKA)
    return kafka_server.KafkaLayout(
        cache_dir=settings.cache_dir,
        state_dir=settings.services_dir / "kafka",
        host=host,
        port=port,
    )


def redis_layout(settings: Settings) -> redis_server.RedisLayout:
    parsed = urlparse(DEFAULT_REDIS)
    assert parsed.hostname and parsed.port
    return redis_server.RedisLayout(
        state_dir=settings.services_dir / "redis", host=parsed.hostname, port=parsed.port
    )


def up(settings: Settings) -> list[str]:
    """Provision and start whatever the environment does not name; idempotent."""
    lines = []
    if settings.kafka_from_environment:
        lines.append(
            f"kafka: using {settings.kafka_bootstrap_servers} from KAFKA_BOOTSTRAP_SERVERS"
        )
    else:
        outcome = kafka_server.start(kafka_layout(settings), settings.partitions)
        lines.append(f"kafka: {outcome} at {settings.kafka_bootstrap_servers}")
    if settings.redis_from_environment:
        lines.append(f"redis: using {settings.redis_url} from REDIS_URL")
    else:
        outcome = redis_server.start(redis_layout(settings))
        lines.append(f"redis: {outcome} at {settings.redis_url}")
    return lines


def down(settings: Settings) -> list[str]:
    """Stop only the processes that `up` started (by pid file, never by name)."""
    lines = []
    for name, pid_file in (
        ("kafka", kafka_layout(settings).pid_file),
        ("redis", redis_layout(settings).pid_file),
    ):
        stopped = processes.stop(pid_file)
        lines.append(f"{name}: {'stopped' if stopped else 'was not running'}")
    return lines


def status(settings: Settings) -> list[ServiceStatus]:
    """What runs where and whether it answers."""
    kafka_pid = (
        None
        if settings.kafka_from_environment
        else processes.read_pid(kafka_layout(settings).pid_file)
    )
    redis_pid = (
        None
        if settings.redis_from_environment
        else processes.read_pid(redis_layout(settings).pid_file)
    )
    return [
        ServiceStatus(
            "kafka",
            settings.kafka_bootstrap_servers,
            not settings.kafka_from_environment,
            kafka_pid,
            kafka_server.answers(settings.kafka_bootstrap_servers),
        ),
        ServiceStatus(
            "redis",
            settings.redis_url,
            not settings.redis_from_environment,
            redis_pid,
            connection.answers(settings.redis_url),
        ),
    ]


def cluster_layout(settings: Settings) -> cluster.ClusterLayout:
    return cluster.layout(settings.services_dir, settings.cache_dir)


def up_cluster(settings: Settings) -> list[str]:
    """Start the cluster topology (whatever the environment names); idempotent. Ends
    with the variables that point the project at it."""
    layout = cluster_layout(settings)
    lines = cluster.start(layout, settings.partitions)
    lines.append("To use the cluster, export:")
    lines.extend(f"  export {name}={value}" for name, value in layout.environment().items())
    return lines


def down_cluster(settings: Settings) -> list[str]:
    """Stop the cluster's nodes that `up --cluster` started (by pid file), all together."""
    layout = cluster_layout(settings)
    named = [(f"kafka {node.bootstrap}", node.pid_file) for node in layout.kafka]
    named += [(f"redis {node.host}:{node.port}", node.pid_file) for node in layout.redis]
    stopped = processes.stop_all([pid_file for _, pid_file in named])
    return [
        f"{name}: {'stopped' if was else 'was not running'}"
        for (name, _), was in zip(named, stopped, strict=True)
    ]


def status_cluster(settings: Settings) -> list[ServiceStatus]:
    """Each node of the cluster topology, its role, and whether it answers."""
    layout = cluster_layout(settings)
    view = next(
        filter(None, (kafka_server.cluster_view(node.bootstrap) for node in layout.kafka)), None
    )
    statuses = []
    for node in layout.kafka:
        answering = kafka_server.answers(node.bootstrap)
        leads = view.leaders.get(node.node_id, 0) if view else 0
        kafka_role = f"node {node.node_id}, broker+controller, leads {leads}"
        statuses.append(
            ServiceStatus(
                "kafka",
                node.bootstrap,
                True,
                processes.read_pid(node.pid_file),
                answering,
                kafka_role,
            )
        )
    for redis_node in layout.redis:
        role = cluster.describe_redis_node(redis_node)
        statuses.append(
            ServiceStatus(
                "redis",
                f"{redis_node.host}:{redis_node.port}",
                True,
                processes.read_pid(redis_node.pid_file),
                role is not None,
                role or "unknown",
            )
        )
    return statuses
