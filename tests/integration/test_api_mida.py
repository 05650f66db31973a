"""The Mida-compatible read API against real Kafka, a real worker and real Redis.

One data set is generated, ingested by a real worker and then read through the API,
in-process (httpx ASGI transport) and through a real `python -m worker api` server.
Numbers are compared with the plain-Python oracle of tests/dataset.py, restricted to
the visitors a filter selects.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from tests.dataset import GOALS, LIVE, Dataset, entries, expected_totals, generate
from tests.integration.harness import (
    Namespace,
    api_server,
    apply_with_one_worker,
    delete_keys,
    store_as_snapshot,
)
from tests.integration.services import Endpoints
from tests.integration.test_ingestion import produce_dataset
from worker.api.app import create_app
from worker.api.mida.params import CRITERIA, EVENT_OPERATORS, SEGMENT_OPERATORS
from worker.events.experiment import ExperimentDefinition
from worker.results.experiment_result import result_document
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals
from worker.store import keys
from worker.store.api_keys import EXPERIMENT_READ, EXPERIMENT_WRITE, create_key, revoke_key

pytestmark = pytest.mark.integration

PROJECT = "shop"
RIVAL = "rival"
RIVAL_EXPERIMENT = "rival-exp"
BASE = f"/v2/project/{PROJECT}"

Event = dict[str, Any]


# --- fixtures: one ingested data set per module --------------------------------------


@pytest.fixture(scope="module")
def api_namespace(endpoints: Endpoints) -> Iterator[Namespace]:
    namespace = Namespace.create(endpoints, f"t{uuid.uuid4().hex[:10]}")
    yield namespace
    delete_keys(namespace.settings.redis_url, namespace.settings.key_prefix)


@pytest.fixture(scope="module")
async def ingested(
    api_namespace: Namespace, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Dataset]:
    settings_ = api_namespace.settings
    data = generate(seed=61, visitors=2000, partitions=settings_.partitions)
    await produce_dataset(api_namespace, data)
    await apply_with_one_worker(api_namespace, tmp_path_factory.mktemp("api-worker"))
    async with Redis.from_url(settings_.redis_url) as redis:
        # Another project's experiment, in the read model the worker keeps.
        rival = dict(data.definitions[0], id=RIVAL_EXPERIMENT, project_key=RIVAL)
        await redis.hset(
            keys.experiments_key(settings_.key_prefix), RIVAL_EXPERIMENT, json.dumps(rival)
        )
        yield data


@pytest.fixture(scope="module")
async def api_key(api_namespace: Namespace, ingested: Dataset) -> str:
    async with Redis.from_url(api_namespace.settings.redis_url) as redis:
        key, _ = await create_key(redis, api_namespace.settings.key_prefix, PROJECT)
    return key


@pytest.fixture(scope="module")
async def writer_key(api_namespace: Namespace, ingested: Dataset) -> str:
    """A key that may also write (share links); ``api_key`` may only read."""
    async with Redis.from_url(api_namespace.settings.redis_url) as redis:
        key, _ = await create_key(
            redis, api_namespace.settings.key_prefix, PROJECT, (EXPERIMENT_READ, EXPERIMENT_WRITE)
        )
    return key


@pytest.fixture(scope="module")
async def rival_key(api_namespace: Namespace, ingested: Dataset) -> str:
    async with Redis.from_url(api_namespace.settings.redis_url) as redis:
        key, _ = await create_key(redis, api_namespace.settings.key_prefix, RIVAL)
    return key


@pytest.fixture(scope="module")
async def client(api_namespace: Namespace, ingested: Dataset) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_namespace.settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        yield http
    await app.state.context.redis.aclose()


async def get_json(
    client: httpx.AsyncClient, path: str, key: str, status: int = 200, **params: Any
) -> Any:
    response = await client.get(path, params=params, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == status, response.text
    return response.json()


# --- the oracle, restricted to the visitors a filter selects ---------------------------


def restricted(data: Dataset, experiment: str, keep: Callable[[Event], bool]) -> Dataset:
    """The data set cut to the experiment's visitors whose first assignment passes ``keep``
    (segments are decided at entry)."""
    chosen = {
        visitor
        for (visitor, exp), first in entries(data).items()
        if exp == experiment and keep(first)
    }
    return Dataset(
        definitions=data.definitions,
        assignments=[event for event in data.assignments if event["visitor_id"] in chosen],
        conversions=[event for event in data.conversions if event["visitor_id"] in chosen],
    )


def context(event: Event, name: str) -> Any:
    return (event.get("context") or {}).get(name)


def on_device(device: str) -> Callable[[Event], bool]:
    return lambda event: context(event, "device") == device


def entered_at_or_after(moment: datetime) -> Callable[[Event], bool]:
    return lambda event: datetime.fromisoformat(event["timestamp"]) >= moment


def assert_variants_match(variants: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Mida's variant rows against oracle rows: counts exact, derived numbers in Mida units."""
    assert [v["variant_id"] for v in variants] == [e["variant_id"] for e in expected]
    control = expected[0]
    for got, want in zip(variants, expected, strict=True):
        assert (got["visitors"], got["conversions"], got["orders"]) == (
            want["visitors"],
            want["conversions"],
            want["orders"],
        ), got["variant_id"]
        assert got["revenue"] == pytest.approx(want["revenue"], abs=1e-3)
        rate = 100 * want["conversions"] / want["visitors"] if want["visitors"] else 0.0
        assert got["conversion_rate"] == pytest.approx(rate, abs=1e-3)
        if want is control or not control["conversions"] or not want["visitors"]:
            assert "improvement" not in got
        else:
            control_rate = control["conversions"] / control["visitors"]
            lift = 100 * (want["conversions"] / want["visitors"] / control_rate - 1)
            assert got["improvement"] == pytest.approx(lift, abs=1e-3)


# --- results -------------------------------------------------------------------------


async def test_default_result_matches_the_oracle(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    for experiment in LIVE:
        for goal in GOALS:
            params: dict[str, Any] = {} if goal == "purchase" else {"goal_key": goal}
            body = await get_json(
                client, f"{BASE}/experiment/{experiment}/result", api_key, **params
            )
            expected = ingested.expected(experiment, goal)
            assert_variants_match(body["variants"], expected)
            assert body["total_visitors"] == sum(row["visitors"] for row in expected)
            assert body["total_conversions"] == sum(row["conversions"] for row in expected)
            assert (body["test_id"], body["status"], body["status_code"]) == (experiment, "live", 1)
            assert (
                body["goal"]["goal_key"] == goal and body["primary_goal"]["goal_key"] == "purchase"
            )
            assert body["has_revenue"] is (goal == "purchase")
            if goal == "purchase":
                revenue = sum(row["revenue"] for row in expected)
                assert body["total_revenue"] == pytest.approx(revenue, abs=1e-2)
                assert body["total_orders"] == sum(row["orders"] for row in expected)
            assert 0 <= body["srm_p_value"] <= 1
            for variant in body["variants"][1:]:
                assert 0 <= variant["statistics"]["chance_to_beat_control"] <= 100
            assert body["variants"][0]["is_control"] and body["variants"][0]["statistics"] is None


async def test_mida_example_desktop_and_us_or_ca_and_chrome(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    chrome = json.dumps([[{"criteria": "browser", "operator": "==", "value": "chrome"}]])
    body = await get_json(
        client,
        f"{BASE}/experiment/exp-b/result",
        api_key,
        filter_by="desktop,country-US,country-CA",
        custom_filter=chrome,
    )

    def keep(event: Event) -> bool:
        return (
            context(event, "device") == "desktop"
            and context(event, "country") in ("US", "CA")
            and context(event, "browser") == "chrome"
        )

    expected = expected_totals(restricted(ingested, "exp-b", keep), "exp-b", "purchase")
    assert 0 < sum(row["visitors"] for row in expected) < 150  # a real, narrow segment
    assert_variants_match(body["variants"], expected)


async def test_dates_in_a_timezone_select_entries_by_the_hour(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    # In UTC-10, 2026-11-20 starts at 10:00 UTC: traffic started at 08:00 UTC.
    local_day_starts = datetime(2026, 11, 20, 10, tzinfo=UTC)
    path = f"{BASE}/experiment/exp-a/result"
    later = await get_json(
        client, path, api_key, start_date="2026-11-20", tz="-10", goal_key="signup"
    )
    earlier = await get_json(
        client, path, api_key, end_date="2026-11-19", tz="-10", goal_key="signup"
    )
    after = entered_at_or_after(local_day_starts)
    assert_variants_match(
        later["variants"], expected_totals(restricted(ingested, "exp-a", after), "exp-a", "signup")
    )
    assert_variants_match(
        earlier["variants"],
        expected_totals(restricted(ingested, "exp-a", lambda e: not after(e)), "exp-a", "signup"),
    )
    assert earlier["total_visitors"] > 0 and later["total_visitors"] > 0
    nothing = await get_json(client, path, api_key, start_date="2026-11-21", end_date="2026-11-30")
    assert nothing["total_visitors"] == 0


async def test_breakdown_by_device_matches_the_oracle_per_segment(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    body = await get_json(client, f"{BASE}/experiment/exp-c/result", api_key, breakdown_by="device")
    assert body["breakdown_by"] == "device"
    segments = {segment["criteria"]: segment for segment in body["breakdowns"]}
    assert {"mobile", "desktop", "tablet"} <= set(segments)
    for device in ("mobile", "desktop", "tablet"):
        cut = restricted(ingested, "exp-c", on_device(device))
        expected = expected_totals(cut, "exp-c", "purchase")
        segment = segments[device]
        assert segment["total_visitors"] == sum(row["visitors"] for row in expected)
        assert_variants_match(segment["variants"], expected)
    assert_variants_match(body["variants"], ingested.expected("exp-c", "purchase"))


async def test_metrics_are_the_secondary_goals(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    body = await get_json(client, f"{BASE}/experiment/exp-b/metrics", api_key)
    assert [row["goal"]["goal_key"] for row in body["metrics"]] == ["signup", "click"]
    for row in body["metrics"]:
        assert_variants_match(row["variants"], ingested.expected("exp-b", row["goal"]["goal_key"]))
    chosen = await get_json(
        client, f"{BASE}/experiment/exp-b/metrics", api_key, metric_keys="click"
    )
    assert [row["goal"]["goal_key"] for row in chosen["metrics"]] == ["click"]
    error = await get_json(
        client, f"{BASE}/experiment/exp-b/metrics", api_key, 400, breakdown_by="device"
    )
    assert error == {"error": "breakdown_by is not supported by /metrics."}


async def test_timeseries_has_one_row_per_local_day(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    body = await get_json(client, f"{BASE}/experiment/exp-a/timeseries", api_key, tz="-10")
    assert [row["date"] for row in body["rows"]] == ["2026-11-19", "2026-11-20"]
    after = entered_at_or_after(datetime(2026, 11, 20, 10, tzinfo=UTC))
    days = [lambda e: not after(e), after]
    for row, keep in zip(body["rows"], days, strict=True):
        expected = expected_totals(restricted(ingested, "exp-a", keep), "exp-a", "purchase")
        got = [
            (v["variant_id"], v["visitors"], v["conversions"], v["orders"]) for v in row["variants"]
        ]
        assert got == [
            (e["variant_id"], e["visitors"], e["conversions"], e["orders"]) for e in expected
        ]
    utc = await get_json(client, f"{BASE}/experiment/exp-a/timeseries", api_key, goal_key="signup")
    assert [row["date"] for row in utc["rows"]] == ["2026-11-20"]
    assert [v["visitors"] for v in utc["rows"][0]["variants"]] == [
        e["visitors"] for e in ingested.expected("exp-a", "signup")
    ]


async def test_mida_example_revenue_over_100_and_currency_usd(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    rules = [
        [
            {"key": "revenue", "operand": ">", "value": 100},
            {"key": "currency", "operand": "=", "value": "USD"},
        ]
    ]
    response = await client.get(
        f"{BASE}/experiment/exp-a/result",
        params={"event_attribute": json.dumps(rules)},
        headers={"x-api-key": api_key},
    )
    assert response.status_code == 200, response.text
    big = Dataset(
        definitions=ingested.definitions,
        assignments=ingested.assignments,
        conversions=[
            c
            for c in ingested.conversions
            if c.get("value", 0) > 100 and c.get("currency") == "USD"
        ],
    )
    assert_variants_match(response.json()["variants"], big.expected("exp-a", "purchase"))


async def test_default_query_is_served_from_the_stored_snapshot(
    client: httpx.AsyncClient, api_namespace: Namespace, ingested: Dataset, api_key: str
) -> None:
    """A snapshot of the default query (as the worker stores it) answers the default
    result; filtered queries are computed. exp-draft has no traffic, so a snapshot
    with visitors can only have come from the snapshot."""
    definition = ExperimentDefinition.model_validate(
        next(d for d in ingested.definitions if d["id"] == "exp-draft")
    )
    rows = [
        VariantTotals("0", visitors=40, conversions=4),
        VariantTotals("1", visitors=60, conversions=9),
    ]
    document = result_document(definition, {g.key: QueryTotals(rows) for g in definition.goals})
    async with Redis.from_url(api_namespace.settings.redis_url) as redis:
        await store_as_snapshot(redis, api_namespace.settings.key_prefix, document)
    path = f"{BASE}/experiment/exp-draft/result"
    served = await get_json(client, path, api_key, goal_key="signup")
    assert [(v["visitors"], v["conversions"]) for v in served["variants"]] == [(40, 4), (60, 9)]
    assert served["variants"][1]["improvement"] == 50.0
    assert (served["status"], served["status_code"]) == ("draft", 9)
    computed = await get_json(client, path, api_key, filter_by="mobile")
    assert computed["total_visitors"] == 0


# --- listing, details, distribution ----------------------------------------------------


async def test_experiments_are_listed_a_page_at_a_time(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    ids = sorted(d["id"] for d in ingested.definitions)
    pages = [
        await get_json(client, f"{BASE}/experiments", api_key, limit=2, offset=offset)
        for offset in (0, 2, 4)
    ]
    assert [page["count"] for page in pages] == [2, 2, 1]
    assert all(page["total"] == len(ids) and page["company_id"] == PROJECT for page in pages)
    assert [e["test_id"] for page in pages for e in page["experiments"]] == ids
    everything = await get_json(client, f"{BASE}/experiments", api_key)
    assert everything["count"] == len(ids) and RIVAL_EXPERIMENT not in str(everything)
    statuses = {e["test_id"]: (e["status"], e["is_completed"]) for e in everything["experiments"]}
    assert statuses["exp-a"] == (1, 0)
    assert statuses["exp-draft"] == (9, 0) and statuses["exp-done"] == (0, 1)
    for bad in ({"limit": 501}, {"limit": 0}, {"offset": -1}, {"limit": "ten"}):
        error = await get_json(client, f"{BASE}/experiments", api_key, 400, **bad)
        assert list(error) == ["error"] and error["error"].startswith("Invalid parameter")


async def test_details_and_distribution(client: httpx.AsyncClient, api_key: str) -> None:
    details = await get_json(client, f"{BASE}/experiment/exp-b", api_key)
    experiment = details["experiment"]
    assert (experiment["test_id"], experiment["status"]) == ("exp-b", 1)
    assert [v["variant_id"] for v in experiment["variants"]] == ["0", "1", "2"]
    assert [g["goal_key"] for g in experiment["secondary_goals"]] == ["signup", "click"]
    shares = await get_json(client, f"{BASE}/experiment/exp-b/distribution", api_key)
    assert shares["distribution_mode"] == "custom"
    assert [v["traffic_weight"] for v in shares["variants"]] == [50.0, 25.0, 25.0]
    done = await get_json(client, f"{BASE}/experiment/exp-done/result", api_key)
    assert (done["status"], done["status_code"]) == ("inactive", 0)


# --- authentication ----------------------------------------------------------------------


async def test_keys_are_required_and_scoped_to_their_project(
    client: httpx.AsyncClient, api_namespace: Namespace, api_key: str, rival_key: str
) -> None:
    path = f"{BASE}/experiment/exp-a/result"
    missing = await client.get(path)
    assert (missing.status_code, missing.json()) == (401, {"error": "Invalid or missing API key."})
    assert missing.headers["www-authenticate"] == "Bearer"
    for headers in (
        {"Authorization": "Bearer abk_not-a-real-key"},
        {"Authorization": f"Basic {api_key}"},
        {"x-api-key": api_key + "x"},
        {"Authorization": "Bearer " + "k" * 10_000},
    ):
        assert (await client.get(path, headers=headers)).status_code == 401
    assert (await client.get(path, headers={"x-api-key": api_key})).status_code == 200
    assert (
        await client.get(path, headers={"authorization": f"bearer {api_key}"})
    ).status_code == 200

    other = await client.get(
        f"{BASE}/experiment/{RIVAL_EXPERIMENT}/result", headers={"x-api-key": api_key}
    )
    absent = await client.get(
        f"{BASE}/experiment/no-such-exp/result", headers={"x-api-key": api_key}
    )
    assert other.status_code == absent.status_code == 404
    assert (
        other.json()
        == absent.json()
        == {"error": "Experiment not found or belongs to a different project."}
    )
    # The rival's key on our project, or its own project path with our experiment: 404 too.
    rival = {"x-api-key": rival_key}
    assert (await client.get(path, headers=rival)).status_code == 404
    assert (
        await client.get(f"/v2/project/{RIVAL}/experiment/exp-a", headers=rival)
    ).status_code == 404
    assert (
        await client.get(f"/v2/project/{RIVAL}/experiment/{RIVAL_EXPERIMENT}", headers=rival)
    ).status_code == 200
    assert (await client.get(f"{BASE}/experiments", headers=rival)).status_code == 404

    async with Redis.from_url(api_namespace.settings.redis_url) as redis:
        short_lived, record = await create_key(redis, api_namespace.settings.key_prefix, PROJECT)
        assert (await client.get(path, headers={"x-api-key": short_lived})).status_code == 200
        assert await revoke_key(redis, api_namespace.settings.key_prefix, record.id) == record
    # A revoked key is refused once the API's key cache forgot it (AB_API_KEY_CACHE_SECONDS).
    await asyncio.sleep(api_namespace.settings.api_key_cache_seconds)
    assert (await client.get(path, headers={"x-api-key": short_lived})).status_code == 401


# --- parameter errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"start_date": "2026-11-5"},
        {"end_date": "yesterday"},
        {"start_date": "2026-11-20", "end_date": "2026-11-19"},
        {"tz": "5.5"},
        {"tz": "abc"},
        {"filter_by": "moon"},
        {"filters": '{"device": "mobile"}'},
        {"breakdown_by": "planet"},
        {"custom_filter": "[[{"},
        {"custom_filter": '[{"criteria": "device", "operator": ">", "value": "x"}]'},
        {"event_attribute": '[{"key": "bad key", "operand": "=", "value": 1}]'},
        {"event_attribute": json.dumps([{"key": "k" * 81, "operand": "=", "value": 1}])},
        {"event_attribute": json.dumps([{"key": "plan", "operand": "=", "value": "v" * 501}])},
        {"min_count": "0"},
        {"min_count": "lots"},
        {"timeframe_days": "0"},
        {"custom_filter": "a" * 60_000},  # near httpx's 64 KiB limit of a URL
    ],
)
async def test_parameter_errors_are_400_with_one_sentence(
    client: httpx.AsyncClient, api_key: str, params: dict[str, str]
) -> None:
    body = await get_json(client, f"{BASE}/experiment/exp-a/result", api_key, 400, **params)
    assert list(body) == ["error"] and body["error"].endswith(".") and "\n" not in body["error"]


async def test_an_unknown_goal_is_404(client: httpx.AsyncClient, api_key: str) -> None:
    """A well-formed name of a goal the experiment lacks names nothing, as an unknown
    experiment id does."""
    body = await get_json(client, f"{BASE}/experiment/exp-a/result", api_key, 404, goal_key="nope")
    assert body == {"error": "The experiment has no goal 'nope' (it has: purchase, signup, click)."}


# --- share links -----------------------------------------------------------------------


async def test_share_link_serves_one_result_without_a_key_until_revoked(
    client: httpx.AsyncClient, api_key: str, writer_key: str
) -> None:
    auth = {"x-api-key": writer_key}  # creating and revoking need experiment:write
    link_path = f"{BASE}/experiment/exp-b/share-link"
    none = await get_json(client, link_path, api_key)
    assert (none["is_public"], none["share_link"]) == (False, None)
    created = await client.post(link_path, headers=auth, params={"expires_in_days": 7})
    assert created.status_code == 201
    link = created.json()["share_link"]
    assert created.json()["is_public"] and link.startswith("http://api.test/v2/share/")
    again = await client.post(link_path, headers=auth)
    assert again.status_code == 200 and again.json()["share_link"] == link
    assert (await get_json(client, link_path, api_key))["share_link"] == link

    shared = await client.get(link)  # no key
    assert shared.status_code == 200
    keyed = await get_json(client, f"{BASE}/experiment/exp-b/result", api_key)
    assert shared.json()["variants"] == keyed["variants"]

    revoked = await client.delete(link_path, headers=auth)
    assert revoked.status_code == 200 and revoked.json()["is_public"] is False
    assert (await client.get(link)).status_code == 404
    assert (await client.get("/v2/share/not-a-token")).status_code == 404
    assert (await client.post(link_path)).status_code == 401


# --- operations -------------------------------------------------------------------------


async def test_health_metrics_and_openapi(client: httpx.AsyncClient, api_key: str) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "redis": "ok"}
    await get_json(client, f"{BASE}/experiment/exp-a", api_key)
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert (
        'ab_api_requests_total{method="GET",route="/v2/project/{project_key}/experiment/{test_id}",status="200"}'
        in metrics.text
    )
    assert "ab_api_request_duration_seconds_bucket" in metrics.text
    document = (await client.get("/openapi.json")).json()
    for path in ("/result", "/metrics", "/timeseries", "/distribution", "/share-link", ""):
        assert f"/v2/project/{{project_key}}/experiment/{{test_id}}{path}" in document["paths"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(document["components"]["securitySchemes"])
    unknown = await client.get("/no/such/route")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Not Found"})


# --- malformed input never makes a 5xx --------------------------------------------------

PATHS = [
    f"{BASE}/experiment/exp-a/result",
    f"{BASE}/experiment/exp-b/metrics",
    f"{BASE}/experiment/exp-c/timeseries",
    f"{BASE}/experiment/exp-a/distribution",
    f"{BASE}/experiment/exp-a/share-link",
    f"{BASE}/experiment/exp-a",
    f"{BASE}/experiments",
    f"/v2/project/{RIVAL}/experiment/exp-a/result",
    "/v2/share/" + "A" * 43,
]
PARAMETERS = [
    "start_date", "end_date", "tz", "goal_key", "goal_profile_id", "filter_by", "custom_filter",
    "breakdown_by", "event_attribute", "min_count", "timeframe_days", "filters", "limit", "offset",
    "metric_keys", "goal_keys", "expires_in_days",
]  # fmt: skip
TRICKY = [
    "", "-1", "0", "1", "2", "1e309", "NaN", "2026-11-20", "2026-02-30", "9" * 5000, "\x00",
    "[[[", "[]", "[[]]", "{}", "null", "true", "desktop,country-US", "user_type", "purchase",
]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["criteria", "operator", "operand", "value", "key", "type"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
rules = st.fixed_dictionaries(
    {
        "criteria": st.sampled_from([*CRITERIA, "utm", "bogus"]),
        "operator": st.sampled_from([*SEGMENT_OPERATORS, *EVENT_OPERATORS, "gt", "bt", "days_lt"]),
        "value": st.one_of(st.text(max_size=5), st.integers(), st.booleans()),
        "key": st.sampled_from(["utm_campaign", "plan", "bad key", "revenue"]),
    }
)
values = st.one_of(
    st.sampled_from(TRICKY),
    st.text(max_size=30),
    json_values.map(json.dumps),
    st.lists(st.lists(rules, min_size=1, max_size=3), max_size=3).map(json.dumps),
)
header_values = st.text(
    st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=60
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(PATHS),
    method=st.sampled_from(["GET", "GET", "GET", "POST", "DELETE", "PUT"]),
    params=st.dictionaries(st.sampled_from(PARAMETERS), values, max_size=5),
    keyed=st.booleans(),
    authorization=st.none() | header_values,
    x_api_key=st.none() | header_values,
)
async def test_malformed_requests_never_get_a_server_error(
    client: httpx.AsyncClient,
    api_key: str,
    path: str,
    method: str,
    params: dict[str, str],
    keyed: bool,
    authorization: str | None,
    x_api_key: str | None,
) -> None:
    # Bytes, so that any octet a client could send reaches the server unchanged.
    headers = {b"Authorization": f"Bearer {api_key}".encode()} if keyed else {}
    if authorization is not None and not keyed:
        headers[b"Authorization"] = authorization.encode("latin-1")
    if x_api_key is not None:
        headers[b"x-api-key"] = x_api_key.encode("latin-1")
    response = await client.request(method, path, params=params, headers=headers)
    assert_not_a_server_error(response)


def assert_not_a_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert list(response.json()) == ["error"]


# --- issue 18: the remaining Mida gaps ---------------------------------------------------


async def test_malformed_test_id_is_400_and_an_unknown_one_404(
    client: httpx.AsyncClient, api_key: str, writer_key: str
) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    for malformed in ("bad%20id", "x" * 81, "a%2Cb", "%C3%A9t%C3%A9"):
        for suffix in ("", "/result", "/metrics", "/timeseries", "/distribution", "/share-link"):
            response = await client.get(f"{BASE}/experiment/{malformed}{suffix}", headers=headers)
            assert response.status_code == 400, (malformed, suffix, response.text)
            assert response.json()["error"].startswith("Invalid parameter test_id: ")
        # The key is checked first: no key is a 401 whatever the id looks like.
        assert (await client.get(f"{BASE}/experiment/{malformed}/result")).status_code == 401
        writer = {"Authorization": f"Bearer {writer_key}"}
        response = await client.post(f"{BASE}/experiment/{malformed}/share-link", headers=writer)
        assert response.status_code == 400
    for unknown in ("no-such-exp", "12345", "x" * 80):
        response = await client.get(f"{BASE}/experiment/{unknown}/result", headers=headers)
        assert (response.status_code, response.json()) == (
            404,
            {"error": "Experiment not found or belongs to a different project."},
        )


async def test_only_start_date_runs_through_the_current_server_date(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    path = f"{BASE}/experiment/exp-a/result"
    today = datetime.now(UTC).date()
    body = await get_json(client, path, api_key, start_date="2026-11-20", goal_key="signup")
    # Every generated event is dated 2026-11-20, before today.
    assert_variants_match(body["variants"], ingested.expected("exp-a", "signup"))
    through_today = await get_json(
        client,
        path,
        api_key,
        start_date="2026-11-20",
        end_date=today.isoformat(),
        goal_key="signup",
    )
    assert through_today["variants"] == body["variants"]
    tomorrow = date.fromordinal(today.toordinal() + 1).isoformat()
    error = await get_json(client, path, api_key, 400, start_date=tomorrow)
    assert error == {
        "error": f"start_date {tomorrow} is after today ({today}, tz 0), where a range "
        "without end_date ends."
    }


async def test_structured_filters_in_every_spelling_are_400(
    client: httpx.AsyncClient, api_key: str
) -> None:
    path = f"{BASE}/experiment/exp-a/result"
    for name, value in (
        ("filters[device]", "mobile"),
        ("filters[country][]", "US"),
        ("filters.device", "mobile"),
        ("filters", '{"device": "mobile"}'),
        ("custom_filter[0]", "x"),
    ):
        body = await get_json(client, path, api_key, 400, **{name: value})
        assert body == {
            "error": f"Structured filters ({name!r}) are not supported: "
            "use filter_by or custom_filter."
        }


async def test_repeated_custom_filter_is_an_and_of_the_parts(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    mobile = json.dumps([[{"criteria": "device", "operator": "==", "value": "mobile"}]])
    us_or_ca = json.dumps(
        [
            [
                {"criteria": "country", "operator": "==", "value": "US"},
                {"criteria": "country", "operator": "==", "value": "CA"},
            ]
        ]
    )
    response = await client.get(
        f"{BASE}/experiment/exp-c/result",
        params=[("custom_filter", mobile), ("custom_filter", us_or_ca)],
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 200, response.text

    def keep(event: Event) -> bool:
        return context(event, "device") == "mobile" and context(event, "country") in ("US", "CA")

    expected = expected_totals(restricted(ingested, "exp-c", keep), "exp-c", "purchase")
    only_last = expected_totals(
        restricted(ingested, "exp-c", lambda e: context(e, "country") in ("US", "CA")),
        "exp-c",
        "purchase",
    )
    assert sum(row["visitors"] for row in expected) < sum(row["visitors"] for row in only_last)
    assert_variants_match(response.json()["variants"], expected)
    twice = await client.get(
        f"{BASE}/experiment/exp-c/result",
        params=[("goal_key", "signup"), ("goal_key", "click")],
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert (twice.status_code, twice.json()) == (
        400,
        {"error": "goal_key is given more than once; give it once."},
    )


async def test_values_and_operators_outside_the_documented_forms_are_400(
    client: httpx.AsyncClient, api_key: str
) -> None:
    path = f"{BASE}/experiment/exp-a/result"
    where = "custom_filter group 1, rule 1: "
    for criteria, operator, value, message in (
        ("country", "==", "USA", "country must be an ISO 3166-1 alpha-2 code (two letters), got 'USA'."),
        ("v.visitor_id", "==", "vis 1", "v.visitor_id must be 1-80 letters, digits, '_' or '-' (the pattern of visitor ids), got 'vis 1'."),
        ("country", "ex", "", "operator 'ex' does not apply to country (use one of ==, !=)."),
        ("hourofday", ">=", "noon", "hourofday must be compared with a number, got 'noon'."),
    ):  # fmt: skip
        rules = json.dumps([[{"criteria": criteria, "operator": operator, "value": value}]])
        body = await get_json(client, path, api_key, 400, custom_filter=rules)
        assert body == {"error": where + message}


# --- a real server process ----------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(
    api_namespace: Namespace, ingested: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log_path: Path = tmp_path_factory.mktemp("api-server") / "api.log"
    with api_server(api_namespace.env, log_path) as base:
        yield base


async def test_real_server_answers_like_the_app(
    live_server: str, client: httpx.AsyncClient, api_key: str
) -> None:
    path = f"{BASE}/experiment/exp-a/result"
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=live_server) as http:
        served = await http.get(path, headers=headers, params={"goal_key": "signup"})
        assert served.status_code == 200
        assert (await http.get(path)).status_code == 401
        assert (await http.get("/healthz")).json()["status"] == "ok"
    in_process = await get_json(client, path, api_key, goal_key="signup")
    assert served.json()["variants"] == in_process["variants"]
