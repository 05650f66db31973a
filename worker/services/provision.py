"""`services up|down|status`: local Kafka and Redis unless the environment names others."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from worker.config import DEFAULT_KAFKA, DEFAULT_REDIS, Settings
from worker.services import kafka_server, processes, redis_server
from worker.store import connection


@dataclass(frozen=True)
class ServiceStatus:
    """One service: where it is, whether we manage it, whether it answers."""

    name: str
    address: str
    managed: bool
    pid: int | None
    answering: bool

    def describe(self) -> str:
        owner = (
            f"local, pid {self.pid}"
            if self.managed and self.pid
            else ("local, not running" if self.managed else "external (from the environment)")
        )
        state = "answering" if self.answering else "NOT answering"
        return f"{self.name:<6} {self.address:<28} {owner:<22} {state}"


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
