"""LaunchDarkly's experiment writes against real Kafka, a real worker and real Redis:
create, create iteration, start and stop through the semantic patch, holdouts and
bandits, all through the HTTP API alone; errors in LaunchDarkly's shape.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from tests.integration.harness import Namespace, WorkerProcesses, produce, read_topic
from tests.integration.harness import wait_until_applied as applied
from tests.integration.test_api_experiments_writes import WORKER_ENV, api, auth, keys_for
from worker.api.app import create_app
from worker.ingestion.topics import ensure_topics
from worker.store.definitions import load_definition

pytestmark = pytest.mark.integration

EXPERIMENTS = "/api/v2/projects/shop/environments/production/experiments"
SEMANTIC_PATCH = {"Content-Type": "application/json; domain-model=launchdarkly.semanticpatch"}


def bare(key: str) -> dict[str, str]:
    """LaunchDarkly's documented header: the key alone, no Bearer."""
    return {"Authorization": key}


def treatment(variation: str, name: str, percent: str, baseline: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "baseline": baseline,
        "allocationPercent": percent,
        "parameters": [{"flagKey": "checkout-colour", "variationId": variation}],
    }


def iteration(hypothesis: str, *metrics: str) -> dict[str, Any]:
    return {
        "hypothesis": hypothesis,
        "canReshuffleTraffic": False,
        "metrics": [{"key": key, "isGroup": False} for key in metrics],
        "primarySingleMetricKey": metrics[0],
        "treatments": [
            treatment("var-blue", "Blue", "50", baseline=True),
            treatment("var-green", "Green", "50"),
        ],
        "flags": {"checkout-colour": {"ruleId": "fallthrough", "flagConfigVersion": 3}},
    }


def experiment_post(key: str = "checkout-colour", **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "name": "Checkout button colour",
        "description": "Green against blue",
        "maintainerId": "member-7",
        "tags": ["checkout", "q4"],
        "iteration": iteration("Green sells more", "purchase"),
        **extra,
    }


async def send(
    namespace: Namespace,
    assignments: list[tuple[str, str, str]],
    conversions: list[tuple[str, str]],
) -> None:
    """Assignments (visitor, experiment, variant), then conversions (visitor, goal)."""
    settings = namespace.settings
    now = datetime.now(UTC)
    messages = [
        (settings.topic_assignments, visitor.encode(), json.dumps({
            "event_id": f"a-{experiment}-{visitor}", "experiment_id": experiment,
            "variant_id": variant, "visitor_id": visitor, "timestamp": now.isoformat(),
        }).encode())
        for visitor, experiment, variant in assignments
    ] + [
        (settings.topic_conversions, visitor.encode(), json.dumps({
            "event_id": f"c-{goal}-{visitor}", "visitor_id": visitor, "goal": goal,
            "timestamp": (now + timedelta(seconds=1)).isoformat(),
        }).encode())
        for visitor, goal in conversions
    ]  # fmt: skip
    await produce(settings, messages)


async def computed(client: httpx.AsyncClient, key: str, experiment: str) -> dict[str, list[int]]:
    """Per variant: [visitors, converted visitors], as the Experiments API computes them."""
    response = await client.post(
        f"/api/experiments/{experiment}/compute-results", headers=auth(key)
    )
    assert response.status_code == 200, response.text
    return {
        row["variantId"]: [row["sampleSize"], row["conversions"]]
        for row in response.json()["data"]["variants"]
    }


def oracle(
    assignments: list[tuple[str, str, str]], conversions: list[tuple[str, str]], experiment: str
) -> dict[str, list[int]]:
    """The same, counted here: first assignment wins, a conversion counts once."""
    variant_of: dict[str, str] = {}
    for visitor, name, variant in assignments:
        if name == experiment:
            variant_of.setdefault(visitor, variant)
    counts = {variant: [0, 0] for variant in sorted(set(variant_of.values()))}
    for variant in variant_of.values():
        counts[variant][0] += 1
    for visitor in {visitor for visitor, _ in conversions}:
        if visitor in variant_of:
            counts[variant_of[visitor]][1] += 1
    return counts


async def test_create_start_traffic_results_stop_and_the_next_iteration_through_the_api_alone(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    settings = namespace.settings
    await ensure_topics(settings)
    workers.start(**WORKER_ENV)
    writer, reader = await keys_for(settings)

    async with api(settings) as client:
        response = await client.post(EXPERIMENTS, json=experiment_post(), headers=bare(writer))
        assert response.status_code == 201, response.text
        created = response.json()
        assert isinstance(created["_creationDate"], int)
        first = dict(created["currentIteration"])
        assert isinstance(first.pop("createdAt"), int)
        assert {k: v for k, v in created.items() if k not in ("_creationDate", "currentIteration", "analysisConfig")} == {
            "_id": "checkout-colour", "key": "checkout-colour", "name": "Checkout button colour",
            "description": "Green against blue", "_maintainerId": "member-7",
            "environmentKey": "production", "type": "experiment", "methodology": "bayesian",
            "archivedDate": None, "tags": ["checkout", "q4"],
            "_links": {
                "self": {"href": f"{EXPERIMENTS}/checkout-colour", "type": "application/json"},
                "parent": {"href": EXPERIMENTS, "type": "application/json"},
            },
            "holdoutId": None, "draftIteration": None, "previousIterations": [],
        }  # fmt: skip
        assert first == {
            "_id": "1", "hypothesis": "Green sells more", "status": "not_started",
            "startedAt": None, "endedAt": None, "winningTreatmentId": None,
            "winningReason": None, "canReshuffleTraffic": False,
            "flags": {"checkout-colour": {
                "targetingRule": "fallthrough", "flagConfigVersion": 3,
                "notInExperimentVariationId": None,
            }},
            "reallocationFrequencyMillis": None,
            "treatments": [
                {"_id": "var-blue", "name": "Blue", "baseline": True, "allocationPercent": "50",
                 "parameters": [{"flagKey": "checkout-colour", "variationId": "var-blue"}]},
                {"_id": "var-green", "name": "Green", "baseline": False, "allocationPercent": "50",
                 "parameters": [{"flagKey": "checkout-colour", "variationId": "var-green"}]},
            ],
            "primaryMetric": {"key": "purchase", "name": "purchase", "kind": "custom", "isNumeric": False},
            "secondaryMetrics": [],
        }  # fmt: skip
        read = await client.get(f"{EXPERIMENTS}/checkout-colour", headers=bare(reader))
        assert read.status_code == 200 and read.json() == created

        start = {"instructions": [{"kind": "startIteration"}]}
        response = await client.patch(
            f"{EXPERIMENTS}/checkout-colour", json=start, headers=bare(writer) | SEMANTIC_PATCH
        )
        assert response.status_code == 200, response.text
        running = response.json()["currentIteration"]
        assert (running["_id"], running["status"]) == ("1", "running")
        started_at = running["startedAt"]
        assert started_at >= created["_creationDate"]

    assignments = [
        (f"v{i}", "checkout-colour", "var-blue" if i % 5 < 2 else "var-green") for i in range(30)
    ]
    conversions = [(f"v{i}", "purchase") for i in range(30) if i % 4 == 0]
    await send(namespace, assignments, conversions)
    await applied(settings, redis)
    expected = oracle(assignments, conversions, "checkout-colour")
    assert expected == {"var-blue": [12, 3], "var-green": [18, 5]}
    async with api(settings) as client:
        assert await computed(client, reader, "checkout-colour") == expected

        stop = {
            "comment": "Green won",
            "instructions": [
                {
                    "kind": "stopIteration",
                    "winningTreatmentId": "var-green",
                    "winningReason": "More purchases",
                }
            ],
        }
        response = await client.patch(
            f"{EXPERIMENTS}/checkout-colour", json=stop, headers=auth(writer) | SEMANTIC_PATCH
        )
        assert response.status_code == 200, response.text
        stopped = response.json()
        ended = stopped["currentIteration"]
        assert (ended["status"], ended["winningTreatmentId"], ended["winningReason"]) == (
            "stopped", "var-green", "More purchases",
        )  # fmt: skip
        assert ended["startedAt"] == started_at and ended["endedAt"] >= started_at
        # LaunchDarkly's previousIterations are those before the current one.
        assert stopped["previousIterations"] == []

    # Stopped: a new visitor is not enrolled, an enrolled one still converts.
    await send(namespace, [("late", "checkout-colour", "var-blue")], [("v1", "purchase")])
    await applied(settings, redis)
    after_stop = oracle(assignments, [*conversions, ("v1", "purchase")], "checkout-colour")
    assert after_stop == {"var-blue": [12, 4], "var-green": [18, 5]}

    async with api(settings) as client:
        assert await computed(client, reader, "checkout-colour") == after_stop
        second = iteration("Green keeps selling more", "purchase", "page-view")
        response = await client.post(
            f"{EXPERIMENTS}/checkout-colour/iterations", json=second, headers=bare(writer)
        )
        assert response.status_code == 200, response.text
        draft = response.json()
        assert (draft["_id"], draft["status"], draft["hypothesis"]) == (
            "2", "not_started", "Green keeps selling more",
        )  # fmt: skip
        assert [m["key"] for m in draft["secondaryMetrics"]] == ["page-view"]
        shown = (await client.get(f"{EXPERIMENTS}/checkout-colour", headers=bare(reader))).json()
        assert shown["draftIteration"] == draft
        assert shown["currentIteration"]["_id"] == "1"

        restart = {
            "instructions": [{"kind": "startIteration", "changeJustification": "More metrics"}]
        }
        response = await client.patch(
            f"{EXPERIMENTS}/checkout-colour", json=restart, headers=bare(writer)
        )
        assert response.status_code == 200, response.text
        now_running = response.json()
        assert now_running["currentIteration"]["_id"] == "2"
        assert now_running["currentIteration"]["status"] == "running"
        assert now_running["draftIteration"] is None
        (previous,) = now_running["previousIterations"]
        assert previous == ended | {"status": "stopped"}
        assert [m["key"] for m in now_running["currentIteration"]["secondaryMetrics"]] == [
            "page-view"
        ]
    published = await read_topic(settings, settings.topic_experiments)
    assert [value["status"] for key, value in published if key == b"checkout-colour"] == [
        "draft", "live", "inactive", "inactive", "live",
    ]  # fmt: skip
    stored = await load_definition(redis, settings.key_prefix, "checkout-colour")
    assert stored is not None and stored.previous_iterations[0].winning_variant_id == "var-green"


def bucket(holdout: str, visitor: str) -> float:
    """The README's holdout bucket, computed here from its description."""
    digest = hashlib.sha1(f"{holdout}.{visitor}".encode()).hexdigest()
    return int(digest[:15], 16) / float(16**15 - 1)


async def test_a_holdout_keeps_its_share_out_of_the_experiments_that_name_it(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    settings = namespace.settings
    await ensure_topics(settings)
    workers.start(**WORKER_ENV)
    writer, reader = await keys_for(settings)
    holdout = experiment_post("program-holdout", type="holdout")
    holdout["iteration"]["treatments"] = [
        treatment("held-out", "Held out", "20", baseline=True),
        treatment("released", "In experiments", "80"),
    ]
    experiment = experiment_post("hero-banner", holdoutId="program-holdout")
    start = {"instructions": [{"kind": "startIteration"}]}
    async with api(settings) as client:
        refused = await client.post(
            EXPERIMENTS,
            json=experiment_post("early", holdoutId="program-holdout"),
            headers=bare(writer),
        )
        assert refused.status_code == 404
        assert refused.json() == {
            "code": "not_found",
            "message": "holdoutId 'program-holdout' names no experiment of this project.",
        }
        for body in (holdout, experiment):
            response = await client.post(EXPERIMENTS, json=body, headers=bare(writer))
            assert response.status_code == 201, response.text
            started = await client.patch(
                f"{EXPERIMENTS}/{body['key']}", json=start, headers=bare(writer)
            )
            assert started.status_code == 200, started.text
        assert started.json()["holdoutId"] == "program-holdout"

    visitors = [f"h{i}" for i in range(200)]
    held = {visitor for visitor in visitors if bucket("program-holdout", visitor) < 0.2}
    assert 25 <= len(held) <= 55  # about 20 % of 200
    # A producer that assigns everybody to the experiment, and one visitor to the wrong
    # holdout group.
    wrong = next(visitor for visitor in visitors if visitor in held)
    assignments = [
        (visitor, "program-holdout", "held-out" if visitor in held else "released")
        for visitor in visitors
        if visitor != wrong
    ] + [(wrong, "program-holdout", "released")]
    assignments += [
        (visitor, "hero-banner", "var-blue" if i % 2 else "var-green")
        for i, visitor in enumerate(visitors)
    ]
    conversions = [(visitor, "purchase") for i, visitor in enumerate(visitors) if i % 3 == 0]
    await send(namespace, assignments, conversions)
    await applied(settings, redis)

    # Counted: every holdout assignment but the wrong one, and the experiment's
    # assignments of the visitors the holdout releases.
    counted = [
        (visitor, name, variant)
        for visitor, name, variant in assignments
        if (visitor != wrong if name == "program-holdout" else visitor not in held)
    ]
    async with api(settings) as client:
        banner = await computed(client, reader, "hero-banner")
        program = await computed(client, reader, "program-holdout")
    assert banner == oracle(counted, conversions, "hero-banner")
    assert sum(n for n, _ in banner.values()) == 200 - len(held)
    assert program == oracle(counted, conversions, "program-holdout")
    assert program["held-out"][0] == len(held) - 1

    letters = [value for _, value in await read_topic(settings, settings.topic_dead_letter)]
    refused_visitors = sorted(
        json.loads(letter["value_text"])["visitor_id"]
        for letter in letters
        if letter["reason"] == "held_out"
    )
    assert refused_visitors == sorted([*held, wrong])


async def test_bandits_keep_their_reallocation_period(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    settings = namespace.settings
    await ensure_topics(settings)
    workers.start(**WORKER_ENV)
    writer, reader = await keys_for(settings)
    bandit = experiment_post("bandit", type="mab")
    bandit["iteration"]["reallocationFrequencyMillis"] = 3_600_000
    async with api(settings) as client:
        response = await client.post(EXPERIMENTS, json=bandit, headers=bare(writer))
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["type"] == "mab"
        assert body["currentIteration"]["reallocationFrequencyMillis"] == 3_600_000
        not_a_bandit = experiment_post("not-a-bandit")
        not_a_bandit["iteration"]["reallocationFrequencyMillis"] = 60_000
        refused = await client.post(EXPERIMENTS, json=not_a_bandit, headers=bare(writer))
        assert refused.status_code == 400
        assert "mab experiments only" in refused.json()["message"]
    stored = await load_definition(redis, settings.key_prefix, "bandit")
    assert stored is not None and stored.reallocation_seconds == 3600.0


async def test_errors_are_in_launchdarklys_shape(
    namespace: Namespace, workers: WorkerProcesses
) -> None:
    settings = namespace.settings
    await ensure_topics(settings)
    workers.start(**WORKER_ENV)
    writer, reader = await keys_for(settings)
    rival, _ = await keys_for(settings, "rival")
    path = f"{EXPERIMENTS}/checkout-colour"

    async with api(settings) as client:

        async def error(status: int, method: str, url: str, key: str | None, body: Any) -> str:
            headers = {} if key is None else bare(key)
            response = await client.request(method, url, json=body, headers=headers)
            assert response.status_code == status, (method, url, response.text)
            payload = response.json()
            assert list(payload) == ["code", "message"], payload
            message: str = payload["message"]
            return message

        uneven = experiment_post("uneven")
        uneven["iteration"]["treatments"][1]["allocationPercent"] = "40"
        assert "must sum to 100, got 90" in await error(400, "POST", EXPERIMENTS, writer, uneven)
        two_baselines = experiment_post("two")
        two_baselines["iteration"]["treatments"][1]["baseline"] = True
        assert "baseline" in await error(400, "POST", EXPERIMENTS, writer, two_baselines)
        assert "type" in await error(
            400, "POST", EXPERIMENTS, writer, experiment_post(type="funnel")
        )
        assert "key" in await error(400, "POST", EXPERIMENTS, writer, experiment_post("no spaces"))
        grouped = experiment_post("grouped")
        grouped["iteration"]["metrics"][0]["isGroup"] = True
        assert "isGroup" in await error(400, "POST", EXPERIMENTS, writer, grouped)
        response = await client.post(
            EXPERIMENTS,
            content=b"{not json",
            headers=bare(writer) | {"Content-Type": "application/json"},
        )
        assert response.status_code == 400 and response.json()["code"] == "invalid_request"
        response = await client.patch(
            f"{EXPERIMENTS}/checkout-colour",
            content=b"\xff\xfe",
            headers=bare(writer) | {"Content-Type": "application/json"},
        )
        assert response.status_code == 400 and response.json()["code"] == "invalid_request"

        assert (
            await client.post(EXPERIMENTS, json=experiment_post(), headers=bare(writer))
        ).status_code == 201
        assert "already exists" in await error(409, "POST", EXPERIMENTS, writer, experiment_post())
        stop = {"instructions": [{"kind": "stopIteration"}]}
        assert "no running iteration" in await error(409, "PATCH", path, writer, stop)
        unknown = {"instructions": [{"kind": "archiveEverything"}]}
        assert "startIteration" in await error(400, "PATCH", path, writer, unknown)
        assert "instructions" in await error(400, "PATCH", path, writer, {})
        start = {"instructions": [{"kind": "startIteration"}]}
        assert (await client.patch(path, json=start, headers=bare(writer))).status_code == 200
        no_draft = {"instructions": [{"kind": "startIteration", "changeJustification": "again"}]}
        assert "no draft iteration" in await error(409, "PATCH", path, writer, no_draft)
        wrong_winner = {
            "instructions": [{"kind": "stopIteration", "winningTreatmentId": "var-red"}]
        }
        assert "var-red" in await error(404, "PATCH", path, writer, wrong_winner)
        moved = iteration("Other split", "purchase")
        moved["treatments"][0]["allocationPercent"] = "70"
        moved["treatments"][1]["allocationPercent"] = "30"
        assert "keeps its treatments" in await error(
            409, "POST", f"{path}/iterations", writer, moved
        )

        assert await error(401, "GET", path, None, None)
        assert await error(401, "PATCH", path, "wrong-key", start)
        assert "experiment:write" in await error(
            403, "POST", EXPERIMENTS, reader, experiment_post("x")
        )
        assert "experiment:write" in await error(403, "PATCH", path, reader, stop)
        assert "experiment:write" in await error(403, "POST", f"{path}/iterations", reader, moved)
        assert await error(404, "GET", f"{EXPERIMENTS}/missing", reader, None)
        assert await error(404, "PATCH", path, rival, stop)
        assert await error(404, "POST", f"{path}/iterations", rival, iteration("x", "purchase"))
        assert "expand" in await error(400, "GET", path + "?expand=everything", reader, None)

        # Nothing refused was published: the experiment is as the one start left it.
        shown = (await client.get(path, headers={"Authorization": f"Bearer {reader}"})).json()
        assert shown["currentIteration"]["status"] == "running" and shown["draftIteration"] is None


async def test_a_write_no_worker_stores_is_answered_202_with_the_experiment_published(
    namespace: Namespace,
) -> None:
    settings = replace(namespace.settings, api_write_wait_seconds=0.3)
    await ensure_topics(settings)
    writer, _ = await keys_for(settings)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        response = await client.post(EXPERIMENTS, json=experiment_post(), headers=bare(writer))
    await app.state.context.publisher.close()
    await app.state.context.redis.aclose()
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["key"], body["currentIteration"]["status"]) == ("checkout-colour", "not_started")
    published = await read_topic(settings, settings.topic_experiments)
    assert [(key, value["type"], value["tags"]) for key, value in published] == [
        (b"checkout-colour", "experiment", ["checkout", "q4"])
    ]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def mutated(draw: Any) -> Any:
    """A valid body with one field, at any depth, replaced by arbitrary JSON."""
    body: Any = experiment_post(f"fuzz-{draw(st.integers(0, 10**6))}")
    node = body
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = draw(st.sampled_from(keys))
        child = node[key]
        if not isinstance(child, dict | list) or not child or draw(st.booleans()):
            node[key] = draw(JSON)
            return body
        node = child


@st.composite
def bodies(draw: Any) -> Any:
    return draw(JSON) if draw(st.booleans()) else mutated(draw)


@pytest.fixture
async def fuzz_client(namespace: Namespace) -> Any:
    settings = replace(namespace.settings, api_write_wait_seconds=0.05)
    await ensure_topics(settings)
    writer, _ = await keys_for(settings)
    async with api(settings) as client:
        yield client, writer


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["", "/checkout-colour/iterations", "/checkout-colour"]),
    body=bodies(),
)
async def test_arbitrary_write_bodies_get_a_launchdarkly_error_never_a_server_error(
    fuzz_client: tuple[httpx.AsyncClient, str], path: str, body: Any
) -> None:
    client, writer = fuzz_client
    method = "PATCH" if path == "/checkout-colour" else "POST"
    response = await client.request(method, EXPERIMENTS + path, json=body, headers=bare(writer))
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert list(response.json()) == ["code", "message"], response.text
