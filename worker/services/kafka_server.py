"""A single-node Apache Kafka broker (KRaft) from the official jars on Maven Central."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from worker.errors import ProvisioningError
from worker.services import processes

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
    """Where the jars, configuration, data and logs of the local broker live."""

    cache_dir: Path
    state_dir: Path
    host: str
    port: int

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


def ensure_jars(layout: KafkaLayout) -> None:
    """Resolve Kafka and its dependencies with Maven into the cache, once."""
    marker = layout.libs / ".complete"
    if marker.exists():
        return
    if shutil.which("java") is None:
        raise ProvisioningError(
            "Java is not installed: install a Java 17 runtime (apt-get install -y openjdk-17-jre-headless) and run again."
        )
    if shutil.which("mvn") is None:
        raise ProvisioningError(
            "Maven is not installed: install it (apt-get install -y maven) and run again; it fetches the Kafka jars from Maven Central."
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
    """KRaft single node on loopback; small internal topics so a 2-core machine starts fast."""
    controller_port = layout.port + 1
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    layout.config_file.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{layout.host}:{controller_port}",
                f"listeners=PLAINTEXT://{layout.host}:{layout.port},CONTROLLER://{layout.host}:{controller_port}",
                f"advertised.listeners=PLAINTEXT://{layout.host}:{layout.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={layout.data_dir}",
                f"num.partitions={partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
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


def format_storage(layout: KafkaLayout) -> None:
    """Format the KRaft metadata directory on first start only."""
    if (layout.data_dir / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    result = subprocess.run(
        _java(layout, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(layout.config_file), heap="-Xmx256m"),
        capture_output=True,
        text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise ProvisioningError(
            f"Kafka storage format failed: {result.stdout.strip()} {result.stderr.strip()}"
        )


async def _answers(bootstrap: str, timeout_seconds: float = 3.0) -> bool:
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
            metadata = await connection.send(MetadataRequest([]))
        except (OSError, KafkaError):  # TimeoutError is an OSError
            continue
        finally:
            connection.close()
        if metadata.brokers:
            return True
    return False


def answers(bootstrap: str) -> bool:
    """True when a broker at this address answers a metadata request (logs nothing)."""
    return asyncio.run(_answers(bootstrap))


def start(layout: KafkaLayout, partitions: int, timeout_seconds: float = 90.0) -> str:
    """Start the broker unless ours already runs; return only once it answers."""
    if processes.read_pid(layout.pid_file) is not None and answers(layout.bootstrap):
        return "already running"
    ensure_jars(layout)
    write_config(layout, partitions)
    format_storage(layout)
    process = None
    if processes.read_pid(layout.pid_file) is None:
        if answers(layout.bootstrap):
            raise ProvisioningError(
                f"Something else already listens on {layout.host}:{layout.port}: stop it, "
                "or point the project at it with the environment variable."
            )
        process = processes.start_background(
            _java(layout, "kafka.Kafka", str(layout.config_file)),
            layout.pid_file,
            layout.state_dir / "kafka.stdout",
        )
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ProvisioningError(f"Kafka exited during start-up; its log is {layout.log_file}.")
        if answers(layout.bootstrap):
            return "started"
        time.sleep(0.5)
    raise ProvisioningError(
        f"Kafka did not answer within {timeout_seconds:.0f} s; its log is {layout.log_file}."
    )
