"""The cluster topology's layout, broker configuration and node-role parsing, and the
durability settings of producers and topics (no broker needed)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from worker.config import DEFAULT_KAFKA, DEFAULT_REDIS, Settings, min_insync_replicas
from worker.ingestion.topics import topic_specs
from worker.producer import new_producer
from worker.services import cluster, kafka_server, redis_server
from worker.services.kafka_server import KafkaLayout


def properties(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.fixture
def layout(tmp_path: Path) -> cluster.ClusterLayout:
    return cluster.layout(tmp_path / "services", tmp_path / "cache")


def test_every_port_is_on_loopback_and_apart_from_the_single_topology(
    layout: cluster.ClusterLayout,
) -> None:
    kafka = [port for node in layout.kafka for port in (node.port, node.controller_port)]
    # Redis Cluster's bus listens 10000 above each node's port.
    redis = [port for node in layout.redis for port in (node.port, node.port + 10000)]
    single = [int(DEFAULT_KAFKA.rsplit(":", 1)[1]), int(DEFAULT_KAFKA.rsplit(":", 1)[1]) + 1]
    single.append(int(DEFAULT_REDIS.rsplit(":", 1)[1].split("/")[0]))
    taken = kafka + redis + single
    assert len(set(taken)) == len(taken) == 6 + 12 + 3
    hosts = {node.host for node in layout.kafka} | {node.host for node in layout.redis}
    assert hosts == {"127.0.0.1"}
    assert len(layout.kafka) == 3 and len(layout.redis) == 6


def test_each_node_has_a_state_directory_of_its_own(layout: cluster.ClusterLayout) -> None:
    dirs = [node.state_dir for node in layout.kafka] + [node.state_dir for node in layout.redis]
    assert len(set(dirs)) == 9
    assert all(d.parent == dirs[0].parent and d.parent.name == "cluster" for d in dirs)


def test_brokers_form_one_quorum_with_three_replicas(layout: cluster.ClusterLayout) -> None:
    configs = []
    for node in layout.kafka:
        kafka_server.write_config(node, partitions=12)
        configs.append(properties(node.config_file))
    assert [c["node.id"] for c in configs] == ["1", "2", "3"]
    voters = {c["controller.quorum.voters"] for c in configs}
    assert voters == {"1@127.0.0.1:29093,2@127.0.0.1:29095,3@127.0.0.1:29097"}
    for node, config in zip(layout.kafka, configs, strict=True):
        assert config["process.roles"] == "broker,controller"
        assert config["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{node.port}"
        assert f"CONTROLLER://127.0.0.1:{node.port + 1}" in config["listeners"]
        assert config["offsets.topic.replication.factor"] == "3"
        assert config["default.replication.factor"] == "3"
        assert config["min.insync.replicas"] == "2"
        assert config["transaction.state.log.min.isr"] == "2"
        assert node.heap == "-Xmx512m"
    assert len({c["log.dirs"] for c in configs}) == 3


def test_the_single_broker_keeps_its_configuration(tmp_path: Path) -> None:
    node = KafkaLayout(
        cache_dir=tmp_path, state_dir=tmp_path / "kafka", host="127.0.0.1", port=19092
    )
    kafka_server.write_config(node, partitions=12)
    config = properties(node.config_file)
    assert config["node.id"] == "1"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert config["offsets.topic.replication.factor"] == "1"
    assert config["transaction.state.log.min.isr"] == "1"
    assert config["min.insync.replicas"] == "1"
    assert node.heap == "-Xmx1g"


def test_only_cluster_redis_nodes_enable_cluster_mode(
    layout: cluster.ClusterLayout, tmp_path: Path
) -> None:
    single = redis_server.RedisLayout(state_dir=tmp_path / "redis", host="127.0.0.1", port=16379)
    redis_server.write_config(single)
    assert "cluster-enabled" not in single.config_file.read_text()
    for node in layout.redis:
        redis_server.write_config(node)
        lines = node.config_file.read_text().splitlines()
        assert "cluster-enabled yes" in lines
        assert f"port {node.port}" in lines
        assert "appendonly yes" in lines


def test_formatted_cluster_id_is_read_back(tmp_path: Path) -> None:
    node = KafkaLayout(cache_dir=tmp_path, state_dir=tmp_path / "k", host="127.0.0.1", port=29092)
    assert kafka_server.formatted_cluster_id(node) is None
    node.data_dir.mkdir(parents=True)
    (node.data_dir / "meta.properties").write_text(
        "#\nnode.id=1\ndirectory.id=abc\nversion=1\ncluster.id=veMJofz-QiCHA0dSvXarcQ\n"
    )
    assert kafka_server.formatted_cluster_id(node) == "veMJofz-QiCHA0dSvXarcQ"


def test_a_new_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # kafka-storage reads "-t -x..." as two options ("expected one argument"): a fresh
    # CI machine's first start failed so, once in 64 (0xF8-0xFB encode a leading "-").
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x07" + bytes(15))])
    monkeypatch.setattr(kafka_server.uuid, "uuid4", lambda: next(drawn))
    assert kafka_server.new_cluster_id() == "BwAAAAAAAAAAAAAAAAAAAA"


CLUSTER_NODES = """\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:26384@36384 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:26380@36380 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:26381@36381 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:26382@36382 slave,fail 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:26383@36383 slave 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:26379@36379,node-1 myself,master - 0 0 1 connected 0-5460
"""


def test_cluster_nodes_are_parsed_into_roles() -> None:
    nodes = {node.address: node for node in cluster.parse_cluster_nodes(CLUSTER_NODES)}
    assert sorted(nodes) == [f"127.0.0.1:{port}" for port in range(26379, 26385)]
    assert {address: node.role for address, node in nodes.items()} == {
        "127.0.0.1:26379": "primary",
        "127.0.0.1:26380": "primary",
        "127.0.0.1:26381": "primary",
        "127.0.0.1:26382": "failed",
        "127.0.0.1:26383": "replica",
        "127.0.0.1:26384": "replica",
    }
    me = nodes["127.0.0.1:26379"]
    assert "myself" in me.flags and me.primary_id is None and me.slots == ("0-5460",)
    replica = nodes["127.0.0.1:26384"]
    assert replica.primary_id == me.node_id


def test_cluster_info_is_parsed() -> None:
    info = cluster.parse_info("cluster_state:ok\r\ncluster_known_nodes:6\r\n")
    assert info == {"cluster_state": "ok", "cluster_known_nodes": "6"}


def test_the_printed_environment_points_settings_at_the_cluster(
    layout: cluster.ClusterLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in layout.environment().items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.kafka_bootstrap_servers.split(",") == [
        "127.0.0.1:29092",
        "127.0.0.1:29094",
        "127.0.0.1:29096",
    ]
    assert settings.redis_url == "redis://127.0.0.1:26379/0"
    assert settings.replication_factor == 3
    assert layout.environment()["AB_REDIS_CLUSTER"] == "1"


async def test_producers_wait_for_every_in_sync_replica_and_are_idempotent() -> None:
    producer = new_producer("127.0.0.1:1", linger_ms=20, request_timeout_ms=10000)
    try:
        # aiokafka keeps acks="all" as -1; idempotence gives the producer a transaction
        # manager (producer id and sequence numbers), which also stops batch expiry.
        assert producer._sender._acks == -1
        assert producer._txn_manager is not None
        assert producer._message_accumulator._linger_time == pytest.approx(0.02)
    finally:
        await producer.stop()


@pytest.mark.parametrize(("replicas", "min_isr"), [(1, "1"), (2, "1"), (3, "2"), (5, "4")])
def test_topics_get_the_replication_factor_and_all_but_one_in_sync(
    replicas: int, min_isr: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AB_REPLICATION_FACTOR", str(replicas))
    specs = topic_specs(Settings.from_env())
    assert len(specs) == 6
    assert {spec.replication_factor for spec in specs} == {replicas}
    assert {spec.topic_configs["min.insync.replicas"] for spec in specs} == {min_isr}
    assert min_insync_replicas(replicas) == int(min_isr)


def test_topic_configs_keep_their_other_settings() -> None:
    settings = Settings.from_env()
    specs = {spec.name: spec.topic_configs for spec in topic_specs(settings)}
    assert specs[settings.topic_experiments]["cleanup.policy"] == "compact"
    assert specs[settings.topic_results]["cleanup.policy"] == "compact"
    assert (
        specs[settings.topic_assignments]["message.timestamp.type"] == settings.input_timestamp_type
    )
    assert "cleanup.policy" not in specs[settings.topic_winners]
