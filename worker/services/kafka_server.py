"""Apache Kafka brokers (KRaft, combined roles) from the official jars on Maven Central:
one node, or one node of a cluster on this machine (worker/services/cluster.py)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from worker.config import min_insync_replicas
from worker.errors import ProvisioningError
from worker.services import debian_packages, processes

KAFKA_VERSION = "3.9.1"
SLF4J_BINDING = "org.slf4j:slf4j-reload4j:1.7.36"

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ab-results-worker</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>{binding_group}</groupId><artifactId>{binding_artifact}</artifactId>
      <version>{binding_version}</version>
    </dependency>
  </dependencies>
</project>
"""

LOG4J = """log4j.rootLogger=INFO, file
log4j.logger.kafka.request.logger=WARN
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


@dataclass(frozen=True)
class KafkaLayout:
    """Where the jars, configuration, data and logs of a local broker live, and its place
    in its cluster."""

    cache_dir: Path
    state_dir: Path
    host: str
    port: int
    node_id: int = 1
    peer_ports: tuple[int, ...] = ()
    """Client ports of every node of the cluster, node ids 1, 2, ... in this order; empty
    for a node alone. Each node's controller listens one port above its clients."""
    heap: str = "-Xmx1g"

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def voters(self) -> str:
        """`controller.quorum.voters`: every node is a controller (combined roles)."""
        ports = self.peer_ports or (self.port,)
        return ",".join(f"{n}@{self.host}:{p + 1}" for n, p in enumerate(ports, start=1))

    @property
    def replicas(self) -> int:
        """How many brokers the cluster has, so how many replicas its topics can have."""
        return len(self.peer_ports) or 1

    @property
    def libs(self) -> Path:
        return self.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "kafka.log"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


def ensure_java() -> None:
    """A Java runtime for the broker, installed from Debian when missing."""
    debian_packages.ensure_command("java", "openjdk-17-jre-headless", "Kafka runs on Java 17")


def ensure_jars(layout: KafkaLayout) -> None:
    """Resolve Kafka and its dependencies with Maven into the cache, once."""
    marker = layout.libs / ".complete"
    if marker.exists():
        return
    debian_packages.ensure_command(
        "mvn", "maven", "Maven fetches the Kafka jars from Maven Central"
    )
    build_dir = layout.cache_dir / f"kafka-{KAFKA_VERSION}"
    build_dir.mkdir(parents=True, exist_ok=True)
    group, artifact, version = SLF4J_BINDING.split(":")
    (build_dir / "pom.xml").write_text(
        POM.format(
            version=KAFKA_VERSION,
            binding_group=group,
            binding_artifact=artifact,
            binding_version=version,
        )
    )
    print(
        f"Fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (first run only)...",
        flush=True,
    )
    command = [
        "mvn", "-B", "-f", str(build_dir / "pom.xml"),
        f"-Dmaven.repo.local={layout.cache_dir / 'm2'}",
        "dependency:copy-dependencies", f"-DoutputDirectory={layout.libs}",
    ]  # fmt: skip
    fetched = 0
    tail: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as mvn:
        assert mvn.stdout is not None
        for line in mvn.stdout:
            tail = (tail + [line.rstrip()])[-15:]
            if "Downloaded from" in line:
                fetched += 1
                if fetched % 50 == 0:
                    print(f"  {fetched} artifacts downloaded", flush=True)
    if mvn.returncode != 0:
        print("\n".join(tail), file=sys.stderr)
        raise ProvisioningError(
            "Maven could not fetch the Kafka jars (see its output above); check that Maven Central is reachable."
        )
    print(
        f"  done: {fetched} artifacts downloaded, {len(list(layout.libs.glob('*.jar')))} jars in {layout.libs}",
        flush=True,
    )
    marker.write_text(KAFKA_VERSION)


def write_config(layout: KafkaLayout, partitions: int) -> None:
    """KRaft on loopback; small internal topics so a 2-core machine starts fast.

    Internal and auto-created topics get one replica per broker and, like the topics
    the worker creates, min.insync.replicas of all but one (one on a single node).
    """
    controller_port = layout.controller_port
    min_isr = min_insync_replicas(layout.replicas)
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    layout.config_file.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={layout.node_id}",
                f"controller.quorum.voters={layout.voters}",
                f"listeners=PLAINTEXT://{layout.host}:{layout.port},CONTROLLER://{layout.host}:{controller_port}",
                f"advertised.listeners=PLAINTEXT://{layout.host}:{layout.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={layout.data_dir}",
                f"num.partitions={partitions}",
                f"offsets.topic.replication.factor={layout.replicas}",
                "offsets.topic.num.partitions=10",
                f"transaction.state.log.replication.factor={layout.replicas}",
                f"transaction.state.log.min.isr={min_isr}",
                f"default.replication.factor={layout.replicas}",
                f"min.insync.replicas={min_isr}",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "",
            ]
        )
    )
    (layout.state_dir / "log4j.properties").write_text(LOG4J.format(log=layout.log_file))


def _java(layout: KafkaLayout, main_class: str, *args: str, heap: str = "-Xmx1g") -> list[str]:
    return [
        "java", heap, "-Xms256m", "-XX:+UseG1GC",
        "-cp", f"{layout.libs}/*",
        f"-Dlog4j.configuration=file:{layout.state_dir / 'log4j.properties'}",
        main_class, *args,
    ]  # fmt: skip


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in Kafka's URL-safe base64 form, drawn again
    while it starts with "-" (as Kafka's ``Uuid.randomUuid`` does): the storage tool
    would read such an id as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def formatted_cluster_id(layout: KafkaLayout) -> str | None:
    """The cluster id this node's storage was formatted with, if it was."""
    try:
        lines = (layout.data_dir / "meta.properties").read_text().splitlines()
    except FileNotFoundError:
        return None
    return next((line.split("=", 1)[1] for line in lines if line.startswith("cluster.id=")), None)


def format_storage(layout: KafkaLayout, cluster_id: str) -> None:
    """Format the KRaft metadata directory on first start only (every node of a cluster
    with the same cluster id)."""
    if (layout.data_dir / "meta.properties").exists():
        return
    result = subprocess.run(
        _java(layout, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(layout.config_file), heap="-Xmx256m"),
        capture_output=True,
        text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise ProvisioningError(
            f"Kafka storage format failed: {result.stdout.strip()} {result.stderr.strip()}"
        )


async def _metadata(bootstrap: str, topics: list[str] | None, timeout_seconds: float) -> Any:
    # A bare connection and one metadata request: unlike a client's bootstrap, this logs
    # nothing when the broker refuses, so the probe needs no change to aiokafka's logger
    # (raising it here once silenced the worker's own Kafka errors for good, issue 13).
    for host, port, _ in collect_hosts(bootstrap):
        try:
            connection = await create_conn(
                host, port, request_timeout_ms=int(timeout_seconds * 1000)
            )
        except (OSError, KafkaError):  # TimeoutError is an OSError
            continue
        try:
            metadata = await connection.send(MetadataRequest(topics))
        except (OSError, KafkaError):  # TimeoutError is an OSError
            continue
        finally:
            connection.close()
        if metadata.brokers:
            return metadata
    return None


def answers(bootstrap: str, timeout_seconds: float = 3.0) -> bool:
    """True when a broker at this address answers a metadata request (logs nothing)."""
    return asyncio.run(_metadata(bootstrap, [], timeout_seconds)) is not None


@dataclass(frozen=True)
class ClusterView:
    """What one broker's metadata says of the cluster: its brokers and who leads what."""

    broker_ids: tuple[int, ...]
    leaders: dict[int, int] = field(default_factory=dict)
    """Partitions (of every topic, internal ones included) led per broker id."""


def cluster_view(bootstrap: str, timeout_seconds: float = 3.0) -> ClusterView | None:
    """The brokers and partition leaders a broker at this address reports; None when
    none answers."""
    metadata = asyncio.run(_metadata(bootstrap, None, timeout_seconds))
    if metadata is None:
        return None
    leaders: dict[int, int] = {}
    for topic in metadata.topics:
        # The partitions are a topic's last field and the leader a partition's third in
        # every version of the response.
        for partition in topic[-1]:
            leaders[partition[2]] = leaders.get(partition[2], 0) + 1
    return ClusterView(tuple(sorted(broker[0] for broker in metadata.brokers)), leaders)


def launch(layout: KafkaLayout, partitions: int, cluster_id: str) -> subprocess.Popen[bytes] | None:
    """Start the broker process unless ours already runs (then None); returns at once."""
    if processes.read_pid(layout.pid_file) is not None:
        return None
    ensure_java()
    ensure_jars(layout)
    write_config(layout, partitions)
    format_storage(layout, cluster_id)
    if answers(layout.bootstrap):
        raise ProvisioningError(
            f"Something else already listens on {layout.host}:{layout.port}: stop it, "
            "or point the project at it with the environment variable."
        )
    return processes.start_background(
        _java(layout, "kafka.Kafka", str(layout.config_file), heap=layout.heap),
        layout.pid_file,
        layout.state_dir / "kafka.stdout",
    )


def wait_until(
    ready: Callable[[], bool],
    launched: Sequence[tuple[KafkaLayout, subprocess.Popen[bytes] | None]],
    timeout_seconds: float,
) -> None:
    """Return once `ready()`; raise when a launched broker exits or time runs out."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        for layout, process in launched:
            if process is not None and process.poll() is not None:
                raise ProvisioningError(
                    f"Kafka exited during start-up; its log is {layout.log_file}."
                )
        if ready():
            return
        time.sleep(0.5)
    logs = ", ".join(str(layout.log_file) for layout, _ in launched)
    raise ProvisioningError(f"Kafka did not answer within {timeout_seconds:.0f} s; see {logs}.")


def start(layout: KafkaLayout, partitions: int, timeout_seconds: float = 90.0) -> str:
    """Start the broker unless ours already runs; return only once it answers."""
    if processes.read_pid(layout.pid_file) is not None and answers(layout.bootstrap):
        return "already running"
    process = launch(layout, partitions, new_cluster_id())
    wait_until(lambda: answers(layout.bootstrap), [(layout, process)], timeout_seconds)
    return "started"
