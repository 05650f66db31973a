"""HTTP writes of definitions: published to `ab.experiments`, then awaited in the read model.

The topic is the source of truth; the worker registry validates each record and stores
the definitions it accepts in Redis. A write is published directly, not through an
outbox: the API keeps no state of its own beside the record, the answer is sent only
after the broker acknowledged it (acks=all, idempotent producer), and a failed send is
answered 503, so the client knows to retry and nothing is left to reconcile.

After the acknowledgement the write waits, up to ``AB_API_WRITE_WAIT_SECONDS``, until
the stored definition equals the one published, so the answer shows what readers will
see. Past the wait (no worker running, or a later write of the same experiment) the
caller answers 202: published, not yet applied.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from worker.api.errors import ApiError
from worker.config import Settings
from worker.events.experiment import ExperimentDefinition
from worker.producer import new_producer
from worker.store.connection import Redis
from worker.store.definitions import load_definition

POLL_SECONDS = 0.05
"""How often a write looks for its definition in Redis while it waits."""
SEND_TIMEOUT_MS = 10_000


class DefinitionPublisher:
    """One producer per API process, started at the first write and stopped at shutdown."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self._settings = settings
        self._redis = redis
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def publish(self, definition: ExperimentDefinition) -> bool:
        """Publish ``definition``; True once the registry stored it, False when it had
        not within the wait. A 503 when Kafka does not acknowledge it."""
        producer = await self._started()
        try:
            # An idempotent producer retries a batch for as long as the broker is away:
            # the request must not wait that long.
            await asyncio.wait_for(
                producer.send_and_wait(
                    self._settings.topic_experiments,
                    value=definition.model_dump_json().encode(),
                    key=definition.id.encode(),
                ),
                SEND_TIMEOUT_MS / 1000,
            )
        except (KafkaError, TimeoutError) as error:
            raise self._unavailable(error) from error
        return await self._stored(definition)

    async def close(self) -> None:
        """Stop the producer, if a write started one."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = new_producer(
                    self._settings.kafka_bootstrap_servers, request_timeout_ms=SEND_TIMEOUT_MS
                )
                try:
                    await producer.start()
                    # Sending to a missing topic could have the broker auto-create it,
                    # uncompacted; the worker creates it as it must be.
                    metadata = await producer.client.fetch_all_metadata()
                except (KafkaError, OSError) as error:
                    await producer.stop()
                    raise self._unavailable(error) from error
                if self._settings.topic_experiments not in metadata.topics():
                    await producer.stop()
                    raise ApiError(
                        503,
                        f"The topic {self._settings.topic_experiments} does not exist yet: "
                        "start a worker ('python -m worker run'), which creates it.",
                    )
                self._producer = producer
            return self._producer

    async def _stored(self, definition: ExperimentDefinition) -> bool:
        deadline = time.monotonic() + self._settings.api_write_wait_seconds
        while True:
            stored = await load_definition(self._redis, self._settings.key_prefix, definition.id)
            if stored == definition:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)

    def _unavailable(self, error: Exception) -> ApiError:
        return ApiError(
            503,
            f"Kafka at {self._settings.kafka_bootstrap_servers} did not take the definition "
            f"({type(error).__name__}); it may not be applied: read it, then try again.",
            headers={"Retry-After": "5"},
        )
