"""The naive baseline of the ingestion benchmark: what most tutorials do.

A faust agent handles one event at a time and makes one Redis round trip per event
(HINCRBY of a per-variant counter), with faust's default acking. Not exact under
replays or duplicates: it is only the speed reference. Run by bench/ingestion.py:

    python bench/naive_baseline.py GROUP COUNTER_KEY TOPIC [TOPIC ...]
"""

from __future__ import annotations

import sys

import faust
import orjson

from worker.config import Settings
from worker.ingestion.app import faust_broker_url, faust_data_dir
from worker.store.connection import connect


def main() -> None:
    group, counter_key, *topics = sys.argv[1:]
    settings = Settings.from_env()
    app = faust.App(
        group,
        broker=faust_broker_url(settings.kafka_bootstrap_servers),
        store="memory://",
        datadir=str(faust_data_dir(settings.services_dir, group)),
        web_enabled=False,
        topic_disable_leader=True,
        value_serializer="raw",
        key_serializer="raw",
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
    )
    redis = connect(settings)

    @app.agent(app.topic(*topics, key_type=bytes, value_type=bytes))
    async def count(stream: faust.StreamT) -> None:
        async for value in stream:
            event = orjson.loads(value)
            field = (
                f"{event.get('experiment_id', '-')}|{event.get('variant_id', event.get('goal'))}"
            )
            await redis.hincrby(counter_key, field, 1)

    faust.Worker(app, loglevel="warning").execute_from_commandline()


if __name__ == "__main__":
    main()
