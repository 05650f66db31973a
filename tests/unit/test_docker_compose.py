"""docker-compose.yml and the Dockerfile agree with the code (no Docker engine needed)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from worker import config
from worker.cli.main import build_parser
from worker.config import Settings, min_insync_replicas
from worker.services import cluster
from worker.services.kafka_server import KAFKA_VERSION
from worker.services.redis_server import ENCODING_LIMITS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SERVICES = ("worker", "api")
CLUSTER = cluster.layout(Path("/services"), Path("/cache"))
CLUSTER_KAFKA = [f"kafka-{node.node_id}" for node in CLUSTER.kafka]
CLUSTER_REDIS = [f"redis-{n}" for n in range(1, len(CLUSTER.redis) + 1)]


def environment(service: str) -> dict[str, str]:
    """A service's environment as strings, whether written as a mapping or a list."""
    raw = SERVICES[service].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {name: str(value) for name, value in raw.items()}


def variables_read_by_config() -> set[str]:
    source = Path(config.__file__).read_text()
    return set(re.findall(r"""\b(?:env|_int|_float)\(\s*["']([A-Z][A-Z0-9_]*)["']""", source))


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` -> {NAME: (host, port)}; an empty host binds every interface."""
    parsed = {}
    for item in value.split(","):
        name, address = item.strip().split("://")
        host, port = address.rsplit(":", 1)
        parsed[name] = (host, int(port))
    return parsed


def test_services_exist() -> None:
    assert {"kafka", "redis", "worker", "api"} <= set(SERVICES)


def options(command: list[str]) -> dict[str, str]:
    """`redis-server --name value ...` -> {name: value}."""
    assert command[0] == "redis-server"
    return dict(zip([w.removeprefix("--") for w in command[1::2]], command[2::2], strict=True))


def test_the_cluster_profile_holds_the_cluster_topology_only() -> None:
    profiled = {name for name, service in SERVICES.items() if service.get("profiles")}
    assert profiled == {*CLUSTER_KAFKA, *CLUSTER_REDIS, "redis-cluster-create"}
    for name in profiled:
        assert SERVICES[name]["profiles"] == ["cluster"]
        # Redis Cluster hands clients node addresses: the same for host and containers.
        assert SERVICES[name]["network_mode"] == "host"


def test_cluster_brokers_are_the_local_cluster_nodes() -> None:
    cluster_ids = set()
    for service, node in zip(CLUSTER_KAFKA, CLUSTER.kafka, strict=True):
        assert SERVICES[service]["image"] == SERVICES["kafka"]["image"]
        env = environment(service)
        cluster_ids.add(env["CLUSTER_ID"])
        assert env["KAFKA_NODE_ID"] == str(node.node_id)
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == node.voters
        declared = listeners(env["KAFKA_LISTENERS"])
        assert declared == {
            "PLAINTEXT": (node.host, node.port),
            env["KAFKA_CONTROLLER_LISTENER_NAMES"]: (node.host, node.controller_port),
        }
        assert listeners(env["KAFKA_ADVERTISED_LISTENERS"]) == {"PLAINTEXT": (node.host, node.port)}
        replicas, min_isr = str(len(CLUSTER.kafka)), str(min_insync_replicas(len(CLUSTER.kafka)))
        for name in ("OFFSETS_TOPIC", "TRANSACTION_STATE_LOG", "DEFAULT"):
            assert env[f"KAFKA_{name}_REPLICATION_FACTOR"] == replicas, name
        assert (
            env["KAFKA_MIN_INSYNC_REPLICAS"]
            == env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]
            == min_isr
        )
        assert env["KAFKA_HEAP_OPTS"].split()[0] == cluster.KAFKA_HEAP
        assert env["KAFKA_NUM_PARTITIONS"] == environment("kafka")["KAFKA_NUM_PARTITIONS"]
        assert SERVICES[service]["volumes"] == [f"{service}-data:{env['KAFKA_LOG_DIRS']}"]
    assert len(cluster_ids) == 1  # one cluster, formatted with one id


def test_cluster_redis_nodes_are_the_local_cluster_nodes() -> None:
    for service, node in zip(CLUSTER_REDIS, CLUSTER.redis, strict=True):
        assert SERVICES[service]["image"] == SERVICES["redis"]["image"]
        settings = options(SERVICES[service]["command"])
        assert (settings["bind"], int(settings["port"])) == (node.host, node.port)
        assert settings["cluster-enabled"] == "yes"
        assert (settings["appendonly"], settings["appendfsync"]) == ("yes", "everysec")
        assert {name: settings[name] for name in ENCODING_LIMITS} == ENCODING_LIMITS
        assert SERVICES[service]["volumes"] == [f"{service}-data:/data"]


def test_the_redis_cluster_is_created_from_its_six_nodes() -> None:
    create = SERVICES["redis-cluster-create"]
    script = create["command"][-1]
    words = script.split("redis-cli --cluster create ", 1)[1].split()
    addresses = words[: words.index("--cluster-replicas")]
    assert addresses == [f"{node.host}:{node.port}" for node in CLUSTER.redis]
    assert words[words.index("--cluster-replicas") + 1] == str(cluster.REDIS_REPLICAS_PER_PRIMARY)
    assert {name: dep["condition"] for name, dep in create["depends_on"].items()} == {
        name: "service_healthy" for name in CLUSTER_REDIS
    }


def test_kafka_is_the_official_image_pinned_to_the_local_version() -> None:
    image = SERVICES["kafka"]["image"]
    assert re.fullmatch(r"apache/kafka:3\.9\.\d+", image), image
    assert image == f"apache/kafka:{KAFKA_VERSION}"


def test_redis_is_the_official_image_with_a_pinned_tag_and_aof() -> None:
    redis = SERVICES["redis"]
    assert re.fullmatch(r"redis:7\.\d+\.\d+", redis["image"]), redis["image"]
    command = redis["command"]
    words = command.split() if isinstance(command, str) else list(command)
    assert words[0] == "redis-server"
    options = dict(zip(words[1::2], words[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    # the same compact-encoding limits as the local provisioner's redis.conf
    assert {name: options[f"--{name}"] for name in ENCODING_LIMITS} == ENCODING_LIMITS


def test_kafka_is_a_single_kraft_node() -> None:
    env = environment("kafka")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    declared = listeners(env["KAFKA_LISTENERS"])
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == (
        f"{env['KAFKA_NODE_ID']}@kafka:{declared[controller][1]}"
    )
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(declared) == set(protocols)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in declared
    for name, (_, port) in listeners(env["KAFKA_ADVERTISED_LISTENERS"]).items():
        assert declared[name][1] == port, name
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_kafka_data_and_redis_aof_are_on_volumes() -> None:
    kafka_data = environment("kafka")["KAFKA_LOG_DIRS"]
    assert any(volume.endswith(f":{kafka_data}") for volume in SERVICES["kafka"]["volumes"])
    assert any(volume.endswith(":/data") for volume in SERVICES["redis"]["volumes"])


def test_config_scan_finds_the_variables() -> None:
    # Guards the scan itself: if it found nothing, the next test would prove nothing.
    assert {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "AB_PARTITIONS", "AB_RESULTS_INTERVAL"} <= (
        variables_read_by_config()
    )


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_variables_are_the_ones_config_reads(service: str) -> None:
    names = set(environment(service))
    assert {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"} <= names
    assert names <= variables_read_by_config(), names - variables_read_by_config()


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_reaches_the_compose_services(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in environment(service).items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()

    kafka_env = environment("kafka")
    advertised = listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    host, port = settings.kafka_bootstrap_servers.rsplit(":", 1)
    assert host == "kafka"
    assert (host, int(port)) in advertised.values()
    # The partition count the worker creates topics with is also the broker's default.
    assert settings.partitions == int(kafka_env["KAFKA_NUM_PARTITIONS"])

    redis_url = urlsplit(settings.redis_url)
    assert (redis_url.scheme, redis_url.hostname, redis_url.port or 6379) == (
        "redis",
        "redis",
        6379,
    )
    depends_on = SERVICES[service]["depends_on"]
    assert depends_on["redis"]["condition"] == "service_healthy"


def test_host_ports_are_the_cli_defaults() -> None:
    # Commands run on the host reach the containers without any variable set.
    kafka_host = listeners(environment("kafka")["KAFKA_ADVERTISED_LISTENERS"])["HOST"]
    assert f"{kafka_host[0]}:{kafka_host[1]}" == config.DEFAULT_KAFKA
    assert f"127.0.0.1:{kafka_host[1]}:{kafka_host[1]}" in SERVICES["kafka"]["ports"]
    redis_port = urlsplit(config.DEFAULT_REDIS).port
    assert f"127.0.0.1:{redis_port}:6379" in SERVICES["redis"]["ports"]


def test_worker_and_api_commands() -> None:
    assert SERVICES["worker"]["command"] == ["python", "-m", "worker", "run"]
    assert SERVICES["api"]["command"][:4] == ["python", "-m", "worker", "api"]
    assert any(str(port).endswith(":8000") for port in SERVICES["api"]["ports"])
    assert SERVICES["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for service in APP_SERVICES:
        assert SERVICES[service]["build"] == "."


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_commands_parse_with_the_cli(service: str) -> None:
    command = SERVICES[service]["command"]
    parser = build_parser()
    subcommands = next(
        action.choices
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    assert command[3] in subcommands, f"'python -m worker {command[3]}' is not a subcommand"
    assert parser.parse_args(command[3:]).command == command[3]


def test_dockerfile_builds_from_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    assert "RUN pip install -r requirements.lock" in instructions
    assert any(line.startswith("RUN pip install --no-deps .") for line in instructions)
    assert (ROOT / "requirements.lock").exists()
