"""Pure parts of the ingestion engines: engine choice, batch bookkeeping, timers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from worker.config import Settings, engine_name
from worker.ingestion.app import create_app
from worker.ingestion.commands import SourceMessage
from worker.ingestion.consumer_loop import ConsumerLoop, group_options, next_offsets, to_messages
from worker.ingestion.pipeline import raise_first_failure
from worker.ingestion.runtime import every


def record(topic: str, partition: int, offset: int) -> ConsumerRecord:
    return ConsumerRecord(
        topic=topic, partition=partition, offset=offset, timestamp=0, timestamp_type=0,
        key=b"k", value=b"{}", checksum=None, serialized_key_size=1,
        serialized_value_size=2, headers=(),
    )  # fmt: skip


def test_engine_defaults_to_aiokafka_and_accepts_both() -> None:
    assert engine_name(None) == "aiokafka"
    assert engine_name("") == "aiokafka"
    assert engine_name(" AioKafka ") == "aiokafka"
    assert engine_name("faust") == "faust"


def test_an_unknown_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AB_INGESTION_ENGINE", "kafka-streams")
    with pytest.raises(ValueError, match="AB_INGESTION_ENGINE must be one of aiokafka, faust"):
        Settings.from_env()
    monkeypatch.setenv("AB_INGESTION_ENGINE", "aiokafka")
    assert Settings.from_env().ingestion_engine == "aiokafka"


def test_to_messages_keeps_only_owned_partitions_in_order() -> None:
    a0, a1, c0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("c", 0)
    batches = {
        a0: [record("a", 0, 5), record("a", 0, 6)],
        a1: [record("a", 1, 9)],
        c0: [record("c", 0, 2)],
    }
    messages = to_messages(batches, {a0, c0})
    assert [(m.topic, m.partition, m.offset) for m in messages] == [
        ("a", 0, 5), ("a", 0, 6), ("c", 0, 2),
    ]  # fmt: skip
    assert messages[0] == SourceMessage("a", 0, 5, b"k", b"{}", timestamp_ms=0)


def test_next_offsets_is_one_past_the_highest_per_topic_partition() -> None:
    messages = [
        SourceMessage("a", 0, 7, None, None),
        SourceMessage("a", 0, 3, None, None),
        SourceMessage("c", 0, 0, None, None),
        SourceMessage("a", 2, 41, None, None),
    ]
    assert next_offsets(messages) == {
        TopicPartition("a", 0): 8,
        TopicPartition("c", 0): 1,
        TopicPartition("a", 2): 42,
    }


def test_a_fatal_failure_wins_over_a_transient_one() -> None:
    transient, fatal = ConnectionError("redis went away"), KeyError("bug")
    raise_first_failure([{"applied": 1}, {"applied": 2}])  # nothing failed: no error
    with pytest.raises(KeyError):
        raise_first_failure([transient, {"applied": 1}, fatal])
    with pytest.raises(ConnectionError):
        raise_first_failure([{"applied": 1}, transient])


async def test_every_runs_after_each_interval_and_stops_on_an_error() -> None:
    runs: list[int] = []

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 3:
            raise RuntimeError("fatal")

    with pytest.raises(RuntimeError, match="fatal"):
        await asyncio.wait_for(every(0.01, job), timeout=5)
    assert runs == [0, 1, 2]


async def test_a_failed_batch_fails_every_later_settle() -> None:
    # A revocation's settle may see the failure first; the main loop must see it too,
    # or it would apply later batches past the one that failed.
    async def failing() -> None:
        raise KeyError("bug in the sink")

    loop = ConsumerLoop(SimpleNamespace(settings=None, pipeline=None))  # type: ignore[arg-type]
    loop._in_flight = asyncio.create_task(failing())
    for _ in range(2):
        with pytest.raises(KeyError):
            await loop.settle(commit=False)


def test_both_engines_take_the_group_session_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A SIGKILLed worker keeps its partitions until its session times out: faust's own
    # default (60 s) stalled a restarted faust worker for a minute, aiokafka's 10 s.
    monkeypatch.setenv("AB_SERVICES_DIR", str(tmp_path))
    assert Settings.from_env().kafka_session_timeout_seconds == 10.0
    monkeypatch.setenv("AB_KAFKA_SESSION_TIMEOUT_SECONDS", "6")
    settings = Settings.from_env()
    options = group_options(settings)
    assert options == {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}
    app, _ = create_app(settings)
    assert app.conf.broker_session_timeout == 6.0
    assert app.conf.broker_heartbeat_interval == 2.0


def test_a_session_timeout_below_kafkas_floor_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AB_KAFKA_SESSION_TIMEOUT_SECONDS", "2")
    with pytest.raises(ValueError, match="AB_KAFKA_SESSION_TIMEOUT_SECONDS must be at least 6"):
        Settings.from_env()
