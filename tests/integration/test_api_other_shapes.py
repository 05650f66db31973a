"""The generic Experiments API, PostHog's timeseries and LaunchDarkly's experiment,
against real Kafka, a real worker and real Redis.

Reuses the ingested data set of test_api_mida.py; numbers are compared with the
plain-Python oracle of tests/dataset.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from tests.dataset import GOALS, Dataset
from tests.integration import test_api_mida as mida
from tests.integration.harness import Namespace
from worker.store.keys import decision_state_key
from worker.store.snapshots import load_decision_state

pytestmark = pytest.mark.integration

# The module-scoped fixtures of test_api_mida.py: one data set ingested per module.
api_namespace = mida.api_namespace
ingested = mida.ingested
api_key = mida.api_key
rival_key = mida.rival_key
client = mida.client

POSTHOG = "/api/projects/shop/experiments/{}/timeseries_results"
LAUNCHDARKLY = "/api/v2/projects/shop/environments/production/experiments/{}"


async def get(client: httpx.AsyncClient, path: str, key: str, **params: Any) -> Any:
    response = await client.get(path, params=params, headers={"x-api-key": key})
    assert response.status_code == 200, response.text
    return response.json()


def rate(conversions: int, visitors: int) -> float:
    return conversions / visitors


# --- the generic Experiments API --------------------------------------------------------


async def test_experiments_page_contract(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    body = await get(client, "/api/experiments", api_key, page=1, limit=2)
    assert list(body) == ["data", "meta"]
    assert body["meta"] == {"total": 5, "page": 1, "limit": 2, "totalPages": 3}
    assert [row["id"] for row in body["data"]] == ["exp-a", "exp-b"]
    experiment = body["data"][1]
    assert set(experiment) == {
        "id", "name", "description", "type", "status", "audienceId", "startDate", "endDate",
        "createdAt", "updatedAt", "variants", "_count",
    }  # fmt: skip
    assert (experiment["status"], experiment["type"]) == ("running", "ab_test")
    assert [v["splitPercentage"] for v in experiment["variants"]] == [50.0, 25.0, 25.0]
    assert [set(v) for v in experiment["variants"]] == [
        {"id", "name", "splitPercentage", "flowId"}
    ] * 3
    visitors = sum(row["visitors"] for row in ingested.expected("exp-b", "purchase"))
    assert experiment["_count"] == {"assignments": visitors}
    last = await get(client, "/api/experiments", api_key, page=3, limit=2)
    assert [row["id"] for row in last["data"]] == ["exp-draft"]
    done = await get(client, "/api/experiments", api_key, status="completed")
    assert [row["id"] for row in done["data"]] == ["exp-done"]
    assert done["meta"] == {"total": 1, "page": 1, "limit": 20, "totalPages": 1}
    one = await get(client, "/api/experiments/exp-b", api_key)
    assert one == {"data": experiment}


async def test_results_and_compute_results_match_the_oracle(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    body = (await get(client, "/api/experiments/exp-c/results", api_key))["data"]
    assert set(body) == {"experimentId", "name", "status", "startDate", "endDate", "variants"}
    assert (body["experimentId"], body["status"]) == ("exp-c", "running")
    by_goal = {goal: ingested.expected("exp-c", goal) for goal in GOALS}
    for index, variant in enumerate(body["variants"]):
        row = by_goal["purchase"][index]
        assert (variant["variantId"], variant["participants"]) == (
            row["variant_id"],
            row["visitors"],
        )
        assert [result["goal"] for result in variant["results"]] == list(GOALS)
        for result in variant["results"]:
            expected = by_goal[result["goal"]][index]
            assert result["primary"] is (result["goal"] == "purchase")
            assert result["conversions"] == expected["conversions"]
            assert result["conversionRate"] == pytest.approx(
                rate(expected["conversions"], expected["visitors"])
            )
            assert result["revenue"] == pytest.approx(expected["revenue"])
    signup = (await get(client, "/api/experiments/exp-c/results", api_key, goal="signup"))["data"]
    assert [[r["goal"] for r in v["results"]] for v in signup["variants"]] == [["signup"]] * 3
    for goal in (None, "signup"):
        response = await client.post(
            "/api/experiments/exp-c/compute-results",
            params={} if goal is None else {"goal": goal},
            headers={"Authorization": f"Bearer {api_key}"},
        )
        assert response.status_code == 200, response.text
        computed = response.json()["data"]
        assert set(computed) == {"experimentId", "variants"}
        rows = by_goal[goal or "purchase"]
        for variant, row in zip(computed["variants"], rows, strict=True):
            assert set(variant) == {
                "variantId", "variantName", "sampleSize", "conversions", "conversionRate",
            }  # fmt: skip
            assert (variant["variantId"], variant["sampleSize"], variant["conversions"]) == (
                row["variant_id"],
                row["visitors"],
                row["conversions"],
            )
            assert variant["conversionRate"] == pytest.approx(
                rate(row["conversions"], row["visitors"])
            )


# --- PostHog --------------------------------------------------------------------------


async def test_posthog_timeseries_is_cumulative_and_ends_at_the_totals(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    for goal, sum_field, squares_field in (
        ("signup", "conversions", "conversions"),
        ("purchase", "revenue", "revenue_sum_squares"),
        ("click", "goal_events", "goal_events_sum_squares"),
    ):
        body = await get(client, POSTHOG.format("exp-b"), api_key, metric_uuid=goal)
        assert set(body) == {
            "experiment_id", "metric_uuid", "status", "timeseries", "computed_at", "errors",
            "fingerprint",
        }  # fmt: skip
        assert (body["experiment_id"], body["metric_uuid"], body["status"]) == (
            "exp-b",
            goal,
            "completed",
        )
        days = list(body["timeseries"])
        assert days and days == sorted(days)
        previous: list[int] = [0, 0, 0]
        for day in days:
            entry = body["timeseries"][day]
            rows = [entry["baseline"], *entry["variant_results"]]
            assert [row["key"] for row in rows] == ["0", "1", "2"]
            samples = [row["number_of_samples"] for row in rows]
            assert all(now >= before for now, before in zip(samples, previous, strict=True))
            previous = samples
        final = body["timeseries"][days[-1]]
        rows = [final["baseline"], *final["variant_results"]]
        for got, row in zip(rows, ingested.expected("exp-b", goal), strict=True):
            assert set(got) == {"key", "number_of_samples", "sum", "sum_squares"}
            assert got["number_of_samples"] == row["visitors"]
            assert got["sum"] == pytest.approx(row[sum_field], abs=1e-3)
            assert got["sum_squares"] == pytest.approx(row[squares_field], rel=1e-9, abs=1e-3)


async def test_posthog_unknown_metric_is_404_and_a_missing_one_400(
    client: httpx.AsyncClient, api_key: str
) -> None:
    headers = {"x-api-key": api_key}
    for params, status in (({"metric_uuid": "nope"}, 404), ({}, 400)):
        response = await client.get(POSTHOG.format("exp-a"), params=params, headers=headers)
        assert response.status_code == status and list(response.json()) == ["error"]


# --- LaunchDarkly ---------------------------------------------------------------------


async def test_launchdarkly_experiment_contract_and_winner(
    client: httpx.AsyncClient, api_namespace: Namespace, api_key: str
) -> None:
    settings = api_namespace.settings
    async with Redis.from_url(settings.redis_url) as redis:
        state = await load_decision_state(redis, settings.key_prefix, "exp-a")
        await redis.set(
            decision_state_key(settings.key_prefix, "exp-b"), orjson.dumps({"winner": "2"})
        )
    body = await get(client, LAUNCHDARKLY.format("exp-b"), api_key)
    assert set(body) == {
        "_id", "key", "name", "description", "_maintainerId", "_creationDate",
        "environmentKey", "type", "methodology", "archivedDate", "tags", "_links",
        "holdoutId", "currentIteration", "draftIteration", "previousIterations",
        "analysisConfig",
    }  # fmt: skip
    assert (body["draftIteration"], body["previousIterations"], body["tags"]) == (None, [], [])
    assert (body["key"], body["environmentKey"], body["methodology"]) == (
        "exp-b",
        "production",
        "bayesian",
    )
    iteration = body["currentIteration"]
    assert iteration["status"] == "running"
    assert [
        {key: treatment[key] for key in ("_id", "name", "baseline", "allocationPercent")}
        for treatment in iteration["treatments"]
    ] == [
        {"_id": "0", "name": "V0", "baseline": True, "allocationPercent": "50"},
        {"_id": "1", "name": "V1", "baseline": False, "allocationPercent": "25"},
        {"_id": "2", "name": "V2", "baseline": False, "allocationPercent": "25"},
    ]
    assert iteration["primaryMetric"] == {
        "key": "purchase", "name": "Purchase", "kind": "custom", "isNumeric": True,
    }  # fmt: skip
    assert [m["key"] for m in iteration["secondaryMetrics"]] == ["signup", "click"]
    assert iteration["secondaryMetrics"][0]["isNumeric"] is False
    assert iteration["winningTreatmentId"] == "2"
    assert isinstance(iteration["winningReason"], str) and "V2" in iteration["winningReason"]
    assert iteration["startedAt"] is None or isinstance(iteration["startedAt"], int)
    assert body["analysisConfig"] == {
        "bayesianThreshold": "95",
        "significanceThreshold": "0.05",
        "testDirection": "two_sided",
        "multipleComparisonCorrectionMethod": None,
        "sequentialTestingEnabled": True,
    }
    other = await get(client, LAUNCHDARKLY.format("exp-a"), api_key)
    assert other["currentIteration"]["winningTreatmentId"] == state.get("winner")
    done = await get(client, LAUNCHDARKLY.format("exp-done"), api_key)
    assert done["currentIteration"]["status"] == "stopped"
    draft = await get(client, LAUNCHDARKLY.format("exp-draft"), api_key)
    assert draft["currentIteration"]["status"] == "not_started"


# --- keys and projects ----------------------------------------------------------------

PATHS = [
    ("GET", "/api/experiments"),
    ("GET", "/api/experiments/exp-a"),
    ("GET", "/api/experiments/exp-a/results"),
    ("POST", "/api/experiments/exp-a/compute-results"),
    ("GET", POSTHOG.format("exp-a") + "?metric_uuid=signup"),
    ("GET", LAUNCHDARKLY.format("exp-a")),
]


def error_keys(path: str) -> list[str]:
    """LaunchDarkly's routes answer errors in its shape, the others in ours."""
    return ["code", "message"] if path.startswith("/api/v2/") else ["error"]


async def test_keys_are_required_and_other_projects_are_404(
    client: httpx.AsyncClient, api_key: str, rival_key: str
) -> None:
    for method, path in PATHS:
        for headers in ({}, {"x-api-key": "wrong"}, {"Authorization": "Bearer wrong"}):
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 401, path
            assert list(response.json()) == error_keys(path)
    rival = {"x-api-key": rival_key}
    for method, path in PATHS[1:]:
        response = await client.request(method, path, headers=rival)
        assert response.status_code == 404, path
        assert list(response.json()) == error_keys(path)
    listed = await get(client, "/api/experiments", rival_key)
    assert [row["id"] for row in listed["data"]] == [mida.RIVAL_EXPERIMENT]
    mine = {"x-api-key": api_key}
    for method, path in (
        ("GET", f"/api/experiments/{mida.RIVAL_EXPERIMENT}"),
        ("POST", f"/api/experiments/{mida.RIVAL_EXPERIMENT}/compute-results"),
        ("GET", POSTHOG.format(mida.RIVAL_EXPERIMENT) + "?metric_uuid=signup"),
        ("GET", POSTHOG.replace("shop", "rival").format(mida.RIVAL_EXPERIMENT) + "?metric_uuid=x"),
        ("GET", LAUNCHDARKLY.format(mida.RIVAL_EXPERIMENT)),
        ("GET", LAUNCHDARKLY.replace("shop", "rival").format(mida.RIVAL_EXPERIMENT)),
        ("GET", "/api/experiments/missing"),
    ):
        response = await client.request(method, path, headers=mine)
        assert response.status_code == 404, path


async def test_parameter_errors_are_400(client: httpx.AsyncClient, api_key: str) -> None:
    headers = {"x-api-key": api_key}
    for path, params in (
        ("/api/experiments", {"status": "bogus"}),
        ("/api/experiments", {"page": "0"}),
        ("/api/experiments", {"limit": "1000"}),
    ):
        response = await client.get(path, params=params, headers=headers)
        assert response.status_code == 400, (path, params)
        assert list(response.json()) == ["error"]


async def test_an_unknown_goal_is_404(client: httpx.AsyncClient, api_key: str) -> None:
    """A well-formed name of a goal the experiment lacks names nothing, as an unknown
    experiment id does."""
    response = await client.get(
        "/api/experiments/exp-a/results", params={"goal": "nope"}, headers={"x-api-key": api_key}
    )
    assert response.status_code == 404
    assert response.json() == {"error": "The experiment has no goal 'nope'."}


# --- malformed input never makes a 5xx --------------------------------------------------

FUZZ_PATHS = [path.split("?")[0] for _, path in PATHS] + [
    POSTHOG.format("%00"),
    LAUNCHDARKLY.replace("production", "x" * 300).format("exp-b"),
    "/api/experiments/" + "9" * 500 + "/results",
]
FUZZ_PARAMETERS = ["page", "limit", "status", "goal", "metric_uuid"]


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(FUZZ_PATHS),
    method=st.sampled_from(["GET", "GET", "POST", "DELETE"]),
    params=st.dictionaries(st.sampled_from(FUZZ_PARAMETERS), mida.values, max_size=3),
)
async def test_malformed_requests_never_get_a_server_error(
    client: httpx.AsyncClient, api_key: str, path: str, method: str, params: dict[str, str]
) -> None:
    headers = {"x-api-key": api_key}
    response = await client.request(method, path, params=params, headers=headers)
    mida.assert_not_a_server_error(response)
