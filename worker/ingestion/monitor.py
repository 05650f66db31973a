"""The worker's own watch on Redis and Kafka: probes, outage warnings and gauges.

Every `MONITOR_INTERVAL_SECONDS` the runtime's monitor reads, with its own clients and
whichever engine consumes, each partition's applied offsets, hold size and outbox
length from Redis and the input topics' first and end offsets from Kafka. A probe that
fails or gets no answer within `PROBE_TIMEOUT_SECONDS` starts (or continues) that
service's outage in worker/ingestion/outage.py, which warns at least every 10 s; an
answer ends it. The answers set the gauges: consumer lag (Kafka end offset minus
Redis's applied offset + 1; for a partition nothing was applied from yet, minus the
first offset Kafka still has), held conversions and outbox depth. An idle consumer
loop sees no error of its own while the broker is down, so without this probe a Kafka
outage would only show as aiokafka's own connection errors.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from worker.config import Settings
from worker.ingestion import metrics, outage
from worker.store.connection import RedisError, connect
from worker.store.worker_gauges import PartitionState, read_partition_states

log = logging.getLogger(__name__)

MONITOR_INTERVAL_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 4.0

Offsets = dict[tuple[str, int], int]


class Monitor:
    """Probes both services, reports outages, sets the gauges; `run` until cancelled."""

    def __init__(self, settings: Settings, partitions: int) -> None:
        self._settings = settings
        self._partitions = partitions
        self._redis = connect(settings)
        self._consumer: AIOKafkaConsumer | None = None
        self._topic_partitions = [
            TopicPartition(topic, partition)
            for topic in settings.input_topics
            for partition in range(partitions)
        ]

    async def run(self) -> None:
        """Probe every MONITOR_INTERVAL_SECONDS; a bug here is logged, never fatal."""
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("monitor: the probe failed unexpectedly; trying again")
            await asyncio.sleep(MONITOR_INTERVAL_SECONDS)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        await self._redis.aclose()

    async def check(self) -> None:
        """One probe of each service (concurrently), then the gauges that need both."""
        states, offsets = await asyncio.gather(self._probe_redis(), self._probe_kafka())
        if states is None or offsets is None:
            return
        outage.EITHER.recovered()
        firsts, ends = offsets
        next_to_apply = {
            (topic, state.partition): offset + 1
            for state in states
            for topic, offset in state.applied.items()
        }
        metrics.set_lag(ends, {tp: next_to_apply.get(tp, firsts.get(tp, 0)) for tp in ends})

    async def _probe_redis(self) -> list[PartitionState] | None:
        try:
            states = await asyncio.wait_for(
                read_partition_states(self._redis, self._settings.key_prefix, self._partitions),
                PROBE_TIMEOUT_SECONDS,
            )
        except RedisError + (OSError,) as error:  # TimeoutError is an OSError
            outage.REDIS.failed(
                _no_answer(error), "no answer to the worker's probe (applied offsets)"
            )
            metrics.DEPENDENCY_UP.labels("redis").set(0)
            return None
        outage.REDIS.recovered()
        metrics.DEPENDENCY_UP.labels("redis").set(1)
        metrics.set_partition_gauges(
            sum(state.held for state in states),
            {state.partition: state.outbox for state in states},
        )
        return states

    async def _probe_kafka(self) -> tuple[Offsets, Offsets] | None:
        try:
            offsets = await asyncio.wait_for(self._kafka_offsets(), PROBE_TIMEOUT_SECONDS)
        except (KafkaError, OSError) as error:
            outage.KAFKA.failed(
                _no_answer(error), "no answer to the worker's probe (end offsets); consuming stalls"
            )
            metrics.DEPENDENCY_UP.labels("kafka").set(0)
            return None
        outage.KAFKA.recovered()
        metrics.DEPENDENCY_UP.labels("kafka").set(1)
        return offsets

    async def _kafka_offsets(self) -> tuple[Offsets, Offsets]:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._settings.kafka_bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
            )
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()  # a consumer that did not start is not reused
                raise
            self._consumer = consumer
        firsts = await self._consumer.beginning_offsets(self._topic_partitions)
        ends = await self._consumer.end_offsets(self._topic_partitions)
        return (
            {(tp.topic, tp.partition): offset for tp, offset in firsts.items()},
            {(tp.topic, tp.partition): offset for tp, offset in ends.items()},
        )


def _no_answer(error: BaseException) -> BaseException | str:
    if isinstance(error, TimeoutError) and not str(error):
        return f"no answer within {PROBE_TIMEOUT_SECONDS:.0f} s"
    return error
