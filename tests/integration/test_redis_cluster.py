"""Exact counts on the cluster topology: a Redis Cluster of three primaries and three
replicas, three Kafka brokers with topics of three replicas (conftest.py's
`cluster_topology`, started once per session), also when a Redis primary or a Kafka
broker is SIGKILLed mid-stream.

The worker is told it runs on a Cluster (AB_REDIS_CLUSTER=1, as `services up --cluster`
prints); the readers of these tests (the CLI's `collect`, the API app) are not, and find
it out from the server. Numbers are compared with the plain-Python oracle of
tests/dataset.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio.cluster import RedisCluster

from tests.dataset import GOALS, LIVE, Dataset, generate
from tests.integration.harness import (
    Namespace,
    RunningCluster,
    WorkerProcesses,
    cluster_services,
    delete_keys,
    delete_topics,
    end_offsets,
    wait_mid_stream,
    wait_until_applied,
)
from tests.integration.services import Endpoints
from tests.integration.test_api_mida import assert_variants_match, get_json
from tests.integration.test_ingestion import (
    TimedMessage,
    assert_results_exact,
    dead_letter_reasons,
    produce_dataset,
    produce_timed,
    sigkill_mid_stream_and_restart,
    timed_messages,
    two_workers_and_a_rebalance,
)
from worker.api.app import create_app
from worker.config import Settings
from worker.services import cluster, processes
from worker.services.redis_server import RedisLayout
from worker.store import keys
from worker.store.api_keys import create_key
from worker.store.connection import Redis, connect, scan_batches
from worker.store.rollups import rebuild_rollups
from worker.store.snapshots import record_decisions

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

PROJECT = "shop"


def cluster_namespace(topology: RunningCluster) -> Namespace:
    """A namespace on the cluster topology; its workers know they run on a Cluster."""
    layout = topology.layout
    namespace = Namespace.create(
        Endpoints(layout.bootstrap, layout.redis_url, "cluster topology"),
        f"t{uuid.uuid4().hex[:10]}",
    )
    replicas = str(len(layout.kafka))
    return replace(
        namespace,
        settings=replace(namespace.settings, replication_factor=len(layout.kafka)),
        env={**namespace.env, "AB_REPLICATION_FACTOR": replicas, "AB_REDIS_CLUSTER": "1"},
    )


def forget(namespace: Namespace) -> None:
    delete_keys(namespace.settings.redis_url, namespace.settings.key_prefix)
    delete_topics(namespace.settings.kafka_bootstrap_servers, namespace.name)


@pytest.fixture
def on_cluster(cluster_topology: RunningCluster) -> Iterator[Namespace]:
    namespace = cluster_namespace(cluster_topology)
    yield namespace
    forget(namespace)


@pytest.fixture
async def cluster_redis(on_cluster: Namespace) -> AsyncIterator[Redis]:
    async with connect(on_cluster.settings) as client:
        yield client


# --- one clean run, read by the CLI and by the API ---------------------------------------


@pytest.fixture(scope="module")
def clean_namespace(cluster_topology: RunningCluster) -> Iterator[Namespace]:
    namespace = cluster_namespace(cluster_topology)
    yield namespace
    forget(namespace)


@pytest.fixture(scope="module")
async def clean_run(
    clean_namespace: Namespace, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Dataset]:
    """A generated data set with duplicates and poison, produced to the three brokers
    and applied by one worker to the Redis Cluster."""
    settings = clean_namespace.settings
    data = generate(seed=11, visitors=1500, partitions=settings.partitions, poison=40)
    await produce_dataset(clean_namespace, data)
    workers = WorkerProcesses(clean_namespace, tmp_path_factory.mktemp("cluster-worker"))
    workers.start()
    try:
        async with connect(settings) as redis:
            await wait_until_applied(settings, redis)
    finally:
        workers.stop_all()
    yield data


async def test_readers_find_out_that_redis_url_names_a_cluster_node(
    clean_namespace: Namespace, endpoints: Endpoints
) -> None:
    assert clean_namespace.settings.redis_cluster is None  # not told: asked
    async with connect(clean_namespace.settings) as on_cluster:
        assert isinstance(on_cluster, RedisCluster)
    alone = replace(Settings.from_env(), redis_url=endpoints.redis, redis_cluster=None)
    async with connect(alone) as single:
        assert not isinstance(single, RedisCluster)


async def test_clean_run_on_the_cluster_is_exact(
    clean_namespace: Namespace, clean_run: Dataset
) -> None:
    await assert_results_exact(clean_namespace, clean_run)
    assert await dead_letter_reasons(clean_namespace) == clean_run.expected_dead
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "results", "exp-b", "--goal", "signup", "--json",
        env={**os.environ, **clean_namespace.env},
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    expected = clean_run.expected("exp-b", "signup")
    assert [(v["visitors"], v["conversions"]) for v in json.loads(stdout)["variants"]] == [
        (e["visitors"], e["conversions"]) for e in expected
    ]


async def test_rollups_rebuilt_on_the_cluster_keep_the_counts(
    clean_namespace: Namespace, clean_run: Dataset
) -> None:
    # WATCH/MULTI on the keys of one partition: one slot, one node.
    async with connect(clean_namespace.settings) as redis:
        rebuilt = await rebuild_rollups(redis, clean_namespace.settings.key_prefix)
    assert {(r.partition, r.experiment_id) for r in rebuilt} >= {
        (partition, "exp-a") for partition in range(clean_namespace.settings.partitions)
    }
    await assert_results_exact(clean_namespace, clean_run)


async def test_api_results_on_the_cluster_match_the_oracle(
    clean_namespace: Namespace, clean_run: Dataset
) -> None:
    settings = clean_namespace.settings
    async with connect(settings) as redis:
        api_key, _ = await create_key(redis, settings.key_prefix, PROJECT)
        # A snapshot the worker stored before its last batches would answer the default
        # query with fewer visitors: the answers must come from the counters read here.
        for experiment in LIVE:
            await redis.delete(keys.snapshot_key(settings.key_prefix, experiment))
    app = create_app(settings)
    base = f"/v2/project/{PROJECT}"
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            for experiment in LIVE:
                for goal in GOALS:
                    body = await get_json(
                        http, f"{base}/experiment/{experiment}/result", api_key, goal_key=goal
                    )
                    assert_variants_match(body["variants"], clean_run.expected(experiment, goal))
            # A ten-year window needs the scan (the columnar visitor store, read per
            # node) and counts what the counters count.
            scanned = await get_json(
                http, f"{base}/experiment/exp-b/result", api_key, goal_key="signup",
                timeframe_days=3650,
            )  # fmt: skip
            assert_variants_match(scanned["variants"], clean_run.expected("exp-b", "signup"))
            results = await get_json(http, "/api/experiments/exp-c/results", api_key)
            visitors = [v["participants"] for v in results["data"]["variants"]]
            assert visitors == [e["visitors"] for e in clean_run.expected("exp-c", "purchase")]
            page = await http.get("/ui/experiments/exp-b", params={"key": api_key})
            assert page.status_code == 200 and '<table class="variants">' in page.text
    finally:
        await app.state.context.redis.aclose()


# --- scripts, scans ------------------------------------------------------------------


async def test_decisions_script_keys_share_one_slot(
    on_cluster: Namespace, cluster_redis: Redis
) -> None:
    prefix = on_cluster.settings.key_prefix
    decisions = [("stop:1", b'{"n": 1}', b'{"e": 1}'), ("ship:1", b'{"n": 2}', b'{"e": 2}')]
    assert await record_decisions(cluster_redis, prefix, "exp-a", decisions, {"at": 1}) == 2
    assert await record_decisions(cluster_redis, prefix, "exp-a", decisions, {"at": 2}) == 0
    outbox = await cluster_redis.lrange(keys.winners_outbox_key(prefix, "exp-a"), 0, -1)
    assert outbox == [b'{"n": 1}', b'{"n": 2}']
    history = await cluster_redis.lrange(keys.decision_history_key(prefix, "exp-a"), 0, -1)
    assert history == [b'{"e": 2}', b'{"e": 1}']


async def test_key_scans_cover_every_primary(on_cluster: Namespace, cluster_redis: Redis) -> None:
    assert isinstance(cluster_redis, RedisCluster)
    prefix = on_cluster.settings.key_prefix
    written = {f"{prefix}:scan:{index}".encode() for index in range(300)}
    async with cluster_redis.pipeline(transaction=False) as pipe:
        for key in written:
            pipe.set(key, 1)
        await pipe.execute()
    slots = cluster_redis.nodes_manager
    owners = {slots.get_node_from_slot(cluster_redis.keyslot(key)).name for key in written}
    assert owners == {node.name for node in cluster_redis.get_primaries()} and len(owners) == 3
    found = [
        key async for batch in scan_batches(cluster_redis, f"{prefix}:scan:*", 50) for key in batch
    ]
    assert sorted(found) == sorted(written)


# --- a worker killed, a worker added: the single-broker exactness tests, on the cluster ----


async def test_worker_sigkilled_mid_stream_on_the_cluster_stays_exact(
    on_cluster: Namespace, workers_on_cluster: WorkerProcesses, cluster_redis: Redis
) -> None:
    await sigkill_mid_stream_and_restart(on_cluster, workers_on_cluster, cluster_redis, 3000)


async def test_two_workers_and_a_rebalance_on_the_cluster_stay_exact(
    on_cluster: Namespace, workers_on_cluster: WorkerProcesses, cluster_redis: Redis
) -> None:
    await two_workers_and_a_rebalance(on_cluster, workers_on_cluster, cluster_redis, 3000)


# --- a Redis primary killed mid-stream, its replica missing its last writes ----------------


def redis_node(layout: cluster.ClusterLayout, port: int) -> RedisLayout:
    return next(node for node in layout.redis if node.port == port)


def redis_pid(layout: cluster.ClusterLayout, port: int) -> int:
    pid = processes.read_pid(redis_node(layout, port).pid_file)
    assert pid is not None, f"no pid file of the Redis node on port {port}"
    return pid


def replica_port(layout: cluster.ClusterLayout, primary_port: int) -> int:
    """The port of the node that replicates the primary on ``primary_port``."""
    reply = cluster.redis_cli(redis_node(layout, primary_port), "cluster", "nodes")
    listed = cluster.parse_cluster_nodes(reply or "")
    primary = next(n for n in listed if n.address.endswith(f":{primary_port}"))
    replica = next(n for n in listed if n.primary_id == primary.node_id)
    return int(replica.address.rpartition(":")[2])


def cut_off_replica(layout: cluster.ClusterLayout, primary: int, replica: int) -> None:
    """Stop the replica (SIGSTOP) and make the primary drop its link: writes the primary
    acknowledges from then on are not on the replica, which cannot connect again (a
    replica that drops the link itself is back within milliseconds)."""
    os.kill(redis_pid(layout, replica), signal.SIGSTOP)
    primary_node = redis_node(layout, primary)
    cluster.redis_cli(primary_node, "client", "kill", "type", "replica")
    info = cluster.parse_info(cluster.redis_cli(primary_node, "info", "replication") or "")
    assert info.get("connected_slaves") == "0", info


def failed_over(layout: cluster.ClusterLayout, killed: int) -> bool:
    """A surviving node sees the killed node failed and the cluster whole again (its
    replica promoted)."""
    survivor = next(node for node in layout.redis if node.port != killed)
    listed = cluster.parse_cluster_nodes(cluster.redis_cli(survivor, "cluster", "nodes") or "")
    failed = any(n.address.endswith(f":{killed}") and "fail" in n.flags for n in listed)
    return failed and cluster.cluster_info(survivor).get("cluster_state") == "ok"


async def test_redis_primary_killed_mid_stream_stays_exact(
    cluster_topology: RunningCluster, on_cluster: Namespace, workers_on_cluster: WorkerProcesses
) -> None:
    """Issue 17.4: the replica promoted in place of a SIGKILLed primary lacks the
    primary's last 1.5 s of writes; the worker, running throughout, finds the
    roll-back and reads the lost offsets again."""
    settings = on_cluster.settings
    layout = cluster_topology.layout
    data, _ = await produce_stream(on_cluster, seed=21)
    produced = await end_offsets(settings, settings.input_topics)
    run = start_stream(on_cluster, data, workers_on_cluster)
    async with connect(settings) as redis:
        assert isinstance(redis, RedisCluster)
        await redis.initialize()
        # the primary of partition 0's slot: the worker writes there from the start
        primary = redis.get_node_from_key(keys.offsets_key(settings.key_prefix, 0))
        assert primary is not None
        port = int(primary.port)
        replica = replica_port(layout, port)
        await wait_mid_stream(settings, redis, produced)
        offsets = keys.offsets_key(settings.key_prefix, 0)
        try:
            cut_off_replica(layout, port, replica)
            # Batches applied now are lost with the primary: at least one must be (a
            # worker slowed by a loaded machine may apply none in a fixed wait).
            replicated = await redis.hgetall(offsets)
            await asyncio.sleep(1.5)
            lost_from = time.monotonic()
            while await redis.hgetall(offsets) == replicated:
                assert time.monotonic() - lost_from < 10, "the worker applied nothing in 11.5 s"
                await asyncio.sleep(0.1)
            os.kill(redis_pid(layout, port), signal.SIGKILL)
        finally:
            os.kill(redis_pid(layout, replica), signal.SIGCONT)
        killed_at = time.monotonic()
        async with rejoined(cluster_topology, f"redis {primary.host}:{port}"):
            while not failed_over(layout, port):
                assert time.monotonic() - killed_at < 60, "no replica was promoted in 60 s"
                await asyncio.sleep(0.2)
            await assert_exact_after_recovery(run, redis)
            assert "Redis rolled back" in workers_on_cluster.log_of(run.worker)


# --- a Kafka broker killed mid-stream, topics of three replicas -------------------------

ELECTION_BOUND_SECONDS = 30.0
"""How soon after a broker's SIGKILL the worker applies again on the partitions that
broker led: the controller fences a broker that stops heartbeating after
broker.session.timeout.ms (9 s by default) and elects new leaders from the in-sync
replicas at once; the rest is the clients' metadata refresh and retries."""


async def input_leaders(settings: Settings) -> dict[tuple[str, int], int]:
    """The broker id that leads each input partition, by (topic, partition)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(list(settings.input_topics))
    finally:
        await admin.close()
    return {
        (item["topic"], part["partition"]): part["leader"]
        for item in described
        for part in item["partitions"]
    }


async def applied_offsets(
    settings: Settings, redis: Redis, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The last applied offset of each (topic, partition), -1 before the first."""
    applied = {}
    for topic, partition in partitions:
        raw = await redis.hget(keys.offsets_key(settings.key_prefix, partition), topic)
        applied[topic, partition] = int(raw) if raw is not None else -1
    return applied


async def test_kafka_broker_killed_mid_stream_stays_exact(
    cluster_topology: RunningCluster, on_cluster: Namespace, workers_on_cluster: WorkerProcesses
) -> None:
    """Issue 17.4: the broker that leads the most input partitions is SIGKILLed while
    the worker reads them; the last fifth of the data set is produced after the kill,
    so it reaches those partitions through their new leaders only. With three replicas
    and min.insync.replicas 2 nothing acknowledged is lost, the worker applies those
    records within the election time, and the counts are exact."""
    settings = on_cluster.settings
    data, held_back = await produce_stream(on_cluster, seed=22, held_back=0.2)
    leaders = await input_leaders(settings)
    victim_id, _ = Counter(leaders.values()).most_common(1)[0]
    victim = next(node for node in cluster_topology.layout.kafka if node.node_id == victim_id)
    led = [tp for tp, leader in leaders.items() if leader == victim_id]
    produced = await end_offsets(settings, settings.input_topics)
    ends = {(tp.topic, tp.partition): end for tp, end in produced.items()}
    run = start_stream(on_cluster, data, workers_on_cluster)
    async with connect(settings) as redis:
        await wait_mid_stream(settings, redis, produced)
        before = await applied_offsets(settings, redis, led)
        assert any(before[tp] < ends[tp] - 1 for tp in led), (
            f"broker {victim_id} was killed after its partitions were applied"
        )
        pid = processes.read_pid(victim.pid_file)
        assert pid is not None, f"no pid file of broker {victim_id}"
        async with rejoined(cluster_topology, f"kafka {victim.bootstrap} (node {victim_id})") as (
            restart
        ):
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            tail = asyncio.create_task(produce_timed(on_cluster, held_back, create_topics=False))
            # The first record written after the kill, applied on a partition the broker led.
            while not any(
                applied >= ends[tp]
                for tp, applied in (await applied_offsets(settings, redis, led)).items()
            ):
                elapsed = time.monotonic() - killed_at
                assert elapsed < ELECTION_BOUND_SECONDS, (
                    f"nothing written after the SIGKILL of broker {victim_id} was applied on its "
                    f"partitions in {elapsed:.0f} s\n{workers_on_cluster.log_of(run.worker)[-3000:]}"
                )
                await asyncio.sleep(0.1)
            resumed = time.monotonic() - killed_at
            print(
                f"\nbroker {victim_id} (led {len(led)} of {len(leaders)} input partitions) "
                f"SIGKILLed: a record written after it applied on its partitions {resumed:.1f} s later"
            )
            restart()  # while the worker catches up: it must not disturb it
            await tail
            await assert_exact_after_recovery(run, redis)


# --- shared by the failure tests ------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """A data set produced to the cluster and the worker applying it."""

    namespace: Namespace
    data: Dataset
    workers: WorkerProcesses
    worker: subprocess.Popen[bytes]


async def produce_stream(
    namespace: Namespace, seed: int, held_back: float = 0.0
) -> tuple[Dataset, list[TimedMessage]]:
    """A generated data set with duplicates and poison, produced but for its last
    `held_back` share, which is returned for the test to produce when it wants."""
    data = generate(seed=seed, visitors=3000, partitions=namespace.settings.partitions, poison=50)
    timed = timed_messages(namespace, data)
    cut = len(timed) - int(len(timed) * held_back)
    await produce_timed(namespace, timed[:cut])
    return data, timed[cut:]


def start_stream(namespace: Namespace, data: Dataset, workers: WorkerProcesses) -> Stream:
    """One worker on the produced data set; small batches, so that a node can be killed
    while the worker applies them."""
    return Stream(namespace, data, workers, workers.start(AB_BATCH_SIZE="100"))


async def assert_exact_after_recovery(run: Stream, redis: Redis) -> None:
    """The worker, never restarted, applies everything, and the counts are the oracle's."""
    await wait_until_applied(run.namespace.settings, redis, timeout=240)
    assert run.worker.poll() is None, run.workers.log_of(run.worker)
    await assert_results_exact(run.namespace, run.data)
    reasons = await dead_letter_reasons(run.namespace)
    # Dead letters are at-least-once: repeated, never lost.
    assert all(reasons[reason] >= count for reason, count in run.data.expected_dead.items())


@asynccontextmanager
async def rejoined(topology: RunningCluster, node: str) -> AsyncIterator[Callable[[], None]]:
    """`services up --cluster` starts the node killed inside again (a Redis node rejoins
    as a replica of the one that replaced it, a broker as a follower), so that later
    tests have the whole cluster. It runs on the way out, or from when the test calls
    the function yielded: a broker's JVM takes seconds to start, which can overlap the
    test's last checks."""
    restarts: list[asyncio.Task[subprocess.CompletedProcess[str]]] = []

    def restart() -> None:
        if not restarts:
            up = asyncio.to_thread(cluster_services, topology.env, "up")
            restarts.append(asyncio.create_task(up))

    try:
        yield restart
    finally:
        restart()
        up = await restarts[0]
        assert up.returncode == 0, up.stdout + up.stderr
    assert f"{node}: started" in up.stdout, up.stdout


@pytest.fixture
def workers_on_cluster(
    on_cluster: Namespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcesses]:
    processes_ = WorkerProcesses(on_cluster, tmp_path_factory.mktemp("cluster-worker"))
    yield processes_
    processes_.stop_all()
