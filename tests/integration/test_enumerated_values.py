"""Issue 13 against a real worker: visitors with any browser (Mida's documented values in
any case, and text nobody listed) are counted, none is dead-lettered, and the Mida API
finds them by custom_filter and breakdown.

The expectations are plain counts over the generated events: a visitor is in the
segment of its browser text lower-cased when that is one of Mida's documented values
(written out below, not taken from the worker), else in `other`.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.integration.harness import (
    Namespace,
    WorkerProcesses,
    delete_keys,
    produce,
    read_topic,
    wait_until_applied,
)
from tests.integration.services import Endpoints
from worker.api.app import create_app
from worker.cli.results_command import collect
from worker.results.query import Condition, ResultQuery
from worker.store.api_keys import create_key

pytestmark = pytest.mark.integration

PROJECT = "shop"
EXPERIMENT = "exp-browsers"
GOAL = "buy"
VARIANTS = ("0", "1")
PATH = f"/v2/project/{PROJECT}/experiment/{EXPERIMENT}/result"
DOCUMENTED = {
    "chrome", "safari", "firefox", "edge", "edge_chromium", "edge_legacy", "brave",
    "vivaldi", "yandex", "chromium", "samsung", "uc", "duckduckgo", "silk", "facebook",
    "instagram", "opera", "ie", "other",
}  # fmt: skip
BROWSERS_SENT = (
    "edge_chromium", "Edge_Chromium", "EDGE_CHROMIUM", "brave", "Brave", "edge_legacy",
    "vivaldi", "yandex", "chromium", "uc", "duckduckgo", "silk", "facebook", "Instagram",
    "chrome", "Safari", "some-new-browser", "Netscape Navigator", "",
)  # fmt: skip
DEVICES_SENT = ("mobile", "Desktop", "tablet", "smartwatch")
OS_SENT = ("windows", "iOS", "android", "BeOS")
SOURCES_SENT = ("direct", "PAID", "search", "carrier-pigeon")

Event = dict[str, Any]
Expected = dict[str, tuple[int, int]]


def counted(browser: str) -> str:
    """The segment a browser text belongs to, by the issue's rule."""
    text = browser.strip().lower()
    return text if text in DOCUMENTED else "other"


def generate(seed: int, visitors: int) -> tuple[list[Event], list[Event]]:
    """Assignments (one per visitor) and conversions (some visitors, after entry), each
    in time order, within 40 minutes of the last hours: no event is in the future of
    its publication, and no conversion can outlive the hold before its assignment."""
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    assignments: list[Event] = []
    conversions: list[Event] = []
    for number in range(visitors):
        visitor = f"vb-{seed}-{number}"
        entered = start + timedelta(seconds=rng.randrange(0, 30 * 60))
        context = {
            "device": rng.choice(DEVICES_SENT),
            "browser": rng.choice(BROWSERS_SENT),
            "os": rng.choice(OS_SENT),
            "source": rng.choice(SOURCES_SENT),
            "country": rng.choice(("US", "DE")),
        }
        if context["browser"] == "":
            del context["browser"]  # no browser at all: counted as other too
        assignments.append(
            {
                "event_id": f"a-{visitor}",
                "experiment_id": EXPERIMENT,
                "variant_id": rng.choice(VARIANTS),
                "visitor_id": visitor,
                "timestamp": entered.isoformat(),
                "context": context,
            }
        )
        for event in range(rng.choice((0, 0, 1, 2))):
            conversions.append(
                {
                    "event_id": f"c-{visitor}-{event}",
                    "visitor_id": visitor,
                    "goal": GOAL,
                    "timestamp": (entered + timedelta(minutes=5 + event)).isoformat(),
                }
            )
    assignments.sort(key=lambda event: event["timestamp"])
    conversions.sort(key=lambda event: event["timestamp"])
    return assignments, conversions


def expected(
    assignments: list[Event], conversions: list[Event], keep: Callable[[Event], bool]
) -> Expected:
    """variant -> (visitors, converted visitors) of the kept visitors."""
    converted = {event["visitor_id"] for event in conversions}
    totals = {variant: [0, 0] for variant in VARIANTS}
    for event in assignments:
        if keep(event):
            row = totals[event["variant_id"]]
            row[0] += 1
            row[1] += event["visitor_id"] in converted
    return {variant: (row[0], row[1]) for variant, row in totals.items()}


def browser_of(event: Event) -> str:
    return str(event["context"].get("browser", ""))


def counted_browser(event: Event) -> str:
    return counted(browser_of(event))


def context_text(name: str) -> Callable[[Event], str]:
    return lambda event: str(event["context"][name]).lower()


def where(label_of: Callable[[Event], str], label: str) -> Callable[[Event], bool]:
    """The visitors whose label is ``label``."""
    return lambda event: label_of(event) == label


def raw_label(event: Event) -> str:
    """The producer's text where it names no documented value, else the counted value."""
    browser = browser_of(event)
    return browser if counted(browser) == "other" and browser else counted(browser)


def got(variants: list[dict[str, Any]]) -> Expected:
    return {row["variant_id"]: (row["visitors"], row["conversions"]) for row in variants}


# --- one ingested data set for the module ---------------------------------------------


@pytest.fixture(scope="module")
def browsers_namespace(endpoints: Endpoints) -> Iterator[Namespace]:
    namespace = Namespace.create(endpoints, f"t{uuid.uuid4().hex[:10]}")
    yield namespace
    delete_keys(namespace.settings.redis_url, namespace.settings.key_prefix)


@pytest.fixture(scope="module")
async def traffic(
    browsers_namespace: Namespace, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[list[Event], list[Event]]]:
    settings = browsers_namespace.settings
    assignments, conversions = generate(seed=13, visitors=600)
    definition = {
        "id": EXPERIMENT,
        "project_key": PROJECT,
        "name": "Browsers",
        "status": "live",
        "variants": [
            {"id": "0", "name": "Control", "is_control": True},
            {"id": "1", "name": "Red"},
        ],
        "goals": [{"key": GOAL, "name": "Buy", "primary": True}],
    }
    messages = [(settings.topic_experiments, EXPERIMENT.encode(), json.dumps(definition).encode())]
    messages += [
        (settings.topic_assignments, e["visitor_id"].encode(), json.dumps(e).encode())
        for e in assignments
    ]
    messages += [
        (settings.topic_conversions, e["visitor_id"].encode(), json.dumps(e).encode())
        for e in conversions
    ]
    await produce(settings, messages)
    workers = WorkerProcesses(browsers_namespace, tmp_path_factory.mktemp("browsers-worker"))
    workers.start()
    async with Redis.from_url(settings.redis_url) as redis:
        try:
            await wait_until_applied(settings, redis)
        finally:
            workers.stop_all()
    yield assignments, conversions


@pytest.fixture(scope="module")
async def client(
    browsers_namespace: Namespace, traffic: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    settings = browsers_namespace.settings
    async with Redis.from_url(settings.redis_url) as redis:
        key, _ = await create_key(redis, settings.key_prefix, PROJECT)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        yield http, key
    await app.state.context.redis.aclose()


async def get(
    client: tuple[httpx.AsyncClient, str], status: int = 200, **params: Any
) -> dict[str, Any]:
    http, key = client
    response = await http.get(PATH, params=params, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the tests -------------------------------------------------------------------------


async def test_every_visitor_is_counted_and_nothing_is_dead_lettered(
    browsers_namespace: Namespace, traffic: tuple[list[Event], list[Event]]
) -> None:
    assignments, conversions = traffic
    dead = await read_topic(
        browsers_namespace.settings, browsers_namespace.settings.topic_dead_letter
    )
    assert [record["reason"] for _, record in dead] == []
    settings = browsers_namespace.settings
    everyone = expected(assignments, conversions, lambda event: True)
    assert sum(visitors for visitors, _ in everyone.values()) == len(assignments)
    # The counters (default query) and the per-visitor scan (timeframe_days) agree.
    for query in (ResultQuery(), ResultQuery(timeframe_days=3650)):
        result = (await collect(settings, EXPERIMENT, query)).model_dump(mode="json")
        assert got(result["variants"]) == everyone


async def test_custom_filter_browser_edge_chromium_finds_them(
    client: tuple[httpx.AsyncClient, str], traffic: tuple[list[Event], list[Event]]
) -> None:
    assignments, conversions = traffic
    for value in ("edge_chromium", "Edge_Chromium"):
        rules = json.dumps([[{"criteria": "browser", "operator": "==", "value": value}]])
        body = await get(client, custom_filter=rules)
        want = expected(assignments, conversions, where(counted_browser, "edge_chromium"))
        assert got(body["variants"]) == want
        assert sum(visitors for visitors, _ in want.values()) > 30  # three spellings sent


async def test_custom_filter_other_finds_the_unknown_browsers(
    client: tuple[httpx.AsyncClient, str], traffic: tuple[list[Event], list[Event]]
) -> None:
    assignments, conversions = traffic
    rules = json.dumps([[{"criteria": "browser", "operator": "==", "value": "other"}]])
    body = await get(client, custom_filter=rules)
    want = expected(assignments, conversions, where(counted_browser, "other"))
    assert got(body["variants"]) == want


async def test_breakdown_by_browser_has_the_documented_values(
    client: tuple[httpx.AsyncClient, str], traffic: tuple[list[Event], list[Event]]
) -> None:
    assignments, conversions = traffic
    body = await get(client, breakdown_by="browser")
    segments = {segment["criteria"]: segment for segment in body["breakdowns"]}
    sent = {counted(browser_of(event)) for event in assignments}
    assert set(segments) == sent
    assert {"edge_chromium", "brave", "instagram", "other"} <= set(segments)
    for label, segment in segments.items():
        want = expected(assignments, conversions, where(counted_browser, label))
        assert got(segment["variants"]) == want, label


async def test_unknown_device_os_and_source_count_as_other_too(
    client: tuple[httpx.AsyncClient, str], traffic: tuple[list[Event], list[Event]]
) -> None:
    assignments, conversions = traffic
    for criteria, unknown in (
        ("device", "smartwatch"),
        ("os", "beos"),
        ("source", "carrier-pigeon"),
    ):
        rules = json.dumps([[{"criteria": criteria, "operator": "==", "value": "other"}]])
        body = await get(client, custom_filter=rules)
        want = expected(assignments, conversions, where(context_text(criteria), unknown))
        assert got(body["variants"]) == want, criteria
        assert sum(visitors for visitors, _ in want.values()) > 0


async def test_a_value_outside_the_list_is_a_400(client: tuple[httpx.AsyncClient, str]) -> None:
    rules = json.dumps([[{"criteria": "browser", "operator": "==", "value": "netscape"}]])
    body = await get(client, 400, custom_filter=rules)
    assert list(body) == ["error"]
    assert body["error"].startswith(
        "custom_filter group 1, rule 1: browser has no value 'netscape' (use one of chrome,"
    )


async def test_the_raw_text_is_kept_for_scans_and_breakdowns(
    browsers_namespace: Namespace, traffic: tuple[list[Event], list[Event]]
) -> None:
    assignments, conversions = traffic
    settings = browsers_namespace.settings
    netscape = Condition(field="browser_raw", operator="==", value="Netscape Navigator")
    filtered = await collect(settings, EXPERIMENT, ResultQuery(segment=((netscape,),)))
    result = filtered.model_dump(mode="json")
    want = expected(assignments, conversions, lambda e: browser_of(e) == "Netscape Navigator")
    assert got(result["variants"]) == want
    assert sum(visitors for visitors, _ in want.values()) > 0

    by_raw_text = await collect(settings, EXPERIMENT, ResultQuery(breakdown="browser_raw"))
    breakdown = by_raw_text.model_dump(mode="json")
    labels = {raw_label(event) for event in assignments}
    assert set(breakdown["segments"]) == labels
    assert {"some-new-browser", "Netscape Navigator", "edge_chromium", "other"} <= labels
    for label, rows in breakdown["segments"].items():
        want = expected(assignments, conversions, where(raw_label, label))
        assert got(rows) == want, label
