"""`python -m worker experiments reset-srm ID`: the only way an SRM alarm clears."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from redis.asyncio import Redis

from tests.integration.harness import Namespace
from worker.store import keys
from worker.store.snapshots import decision_history

pytestmark = pytest.mark.integration

DEFINITION = {
    "id": "srm-exp",
    "project_key": "shop",
    "name": "SRM",
    "status": "live",
    "variants": [
        {"id": "a", "name": "A", "is_control": True, "traffic_weight": 0.5},
        {"id": "b", "name": "B", "traffic_weight": 0.5},
    ],
    "goals": [{"key": "buy", "name": "Buy", "primary": True}],
}


def reset(namespace: Namespace, experiment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "experiments", "reset-srm", experiment],
        env={**os.environ, **namespace.env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_reset_srm_clears_the_alarm_once_and_queues_srm_cleared(
    namespace: Namespace, redis: Redis
) -> None:
    prefix = namespace.settings.key_prefix
    await redis.hset(keys.experiments_key(prefix), "srm-exp", orjson.dumps(DEFINITION))
    state = {"winner": None, "srm_alarm": True, "sequence": {"srm_detected": 1}}
    await redis.set(keys.decision_state_key(prefix, "srm-exp"), orjson.dumps(state))

    done = reset(namespace, "srm-exp")
    assert done.returncode == 0, done.stderr
    assert "reset" in done.stdout
    raw = await redis.get(keys.decision_state_key(prefix, "srm-exp"))
    assert raw is not None
    stored = orjson.loads(raw)
    assert stored["srm_alarm"] is False
    assert stored["sequence"] == {"srm_detected": 1, "srm_cleared": 1}
    (entry,) = await redis.lrange(keys.winners_outbox_key(prefix, "srm-exp"), 0, -1)
    event = orjson.loads(entry)["value"]
    assert (event["kind"], event["idempotency_key"]) == ("srm_cleared", "srm-exp:srm_cleared:-:1")
    # The history holds it too, and keeps it: the relay trims only the outbox.
    assert await decision_history(redis, prefix, "srm-exp") == [event]

    again = reset(namespace, "srm-exp")
    assert again.returncode == 0 and "nothing to reset" in again.stdout
    assert await redis.llen(keys.winners_outbox_key(prefix, "srm-exp")) == 1
    assert await decision_history(redis, prefix, "srm-exp") == [event]

    unknown = reset(namespace, "no-such-experiment")
    assert unknown.returncode != 0
    assert "No experiment 'no-such-experiment'" in unknown.stderr + unknown.stdout
    assert "Traceback" not in unknown.stderr
