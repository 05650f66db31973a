"""The Kameleoon results flow against real Kafka, a real worker and real Redis.

Reuses the ingested data set of test_api_mida.py; numbers are compared with the
plain-Python oracle of tests/dataset.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.dataset import GOALS, Dataset, expected_totals
from tests.integration import test_api_mida as mida
from tests.integration.harness import Namespace
from tests.integration.test_api_mida import Event, context, on_device, restricted
from worker.api.app import create_app
from worker.config import Settings
from worker.store.keys import data_code_key

pytestmark = pytest.mark.integration

ALLOWED_HOSTS_ENV = "AB_CALLBACK_ALLOWED_HOSTS"

# The module-scoped fixtures of test_api_mida.py: one data set ingested per module.
api_namespace = mida.api_namespace
ingested = mida.ingested
api_key = mida.api_key
writer_key = mida.writer_key
rival_key = mida.rival_key
client = mida.client

WHOLE_RANGE = [{"start": "2026-11-01T00:00:00Z", "end": "2026-11-30T23:59:59Z"}]
BODY: dict[str, Any] = {"dateIntervals": WHOLE_RANGE, "conversionType": "ALL_CONVERSION"}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def request_code(
    client: httpx.AsyncClient, path: str, key: str, body: dict[str, Any], status: int = 200
) -> Any:
    response = await client.post(path, json=body, headers=auth(key))
    assert response.status_code == status, response.text
    return response.json()


async def ready(client: httpx.AsyncClient, code: str, key: str) -> dict[str, Any]:
    """Poll the code until it is no longer PENDING; the READY data."""
    for _ in range(200):
        response = await client.get("/results", params={"dataCode": code}, headers=auth(key))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] != "PENDING":
            assert body["status"] == "READY", body
            return dict(body["data"])
        await asyncio.sleep(0.05)
    raise AssertionError("the computation never finished")


async def results(
    client: httpx.AsyncClient, experiment: str, key: str, **body: Any
) -> dict[str, Any]:
    code = await request_code(client, f"/experiments/{experiment}/results", key, BODY | body)
    assert set(code) == {"dataCode"} and len(code["dataCode"]) >= 43
    return await ready(client, code["dataCode"], key)


def assert_matches(
    general: dict[str, Any],
    expected: dict[str, list[dict[str, Any]]],
    variant: int,
    unit: str = "visitors",
    converted: str = "conversions",
) -> None:
    """One generalData against the oracle rows (goal → rows, control first)."""
    first = next(iter(expected.values()))[variant]
    assert (general["visitorCount"], general["visitCount"]) == (first["visitors"], first["visits"])
    assert set(general["goalsData"]) == set(expected)
    for goal, rows in expected.items():
        row, control = rows[variant], rows[0]
        data = general["goalsData"][goal]
        kameleoon = {
            "conversionCount", "convertedVisitCount", "revenueCount", "averageCart",
            "conversionRate", "improvementRate", "reliability",
        }  # fmt: skip
        # Extensions: each lift's interval, a revenue or count goal's conversion rate, a
        # revenue goal's average cart (revenue per order), the note on visits analysed
        # as independent, and the goal's metric adjusted by CUPED.
        extensions = {
            "improvementInterval", "improvementIntervalNote", "conversionRateImprovementRate",
            "conversionRateImprovementInterval", "conversionRateImprovementIntervalNote",
            "conversionRateReliability", "averageCartImprovementRate",
            "averageCartImprovementInterval", "averageCartReliability", "reliabilityNote",
            "cupedImprovementRate", "cupedImprovementInterval", "cupedImprovementIntervalNote",
            "cupedReliability", "cupedVarianceReduction",
        }  # fmt: skip
        assert kameleoon <= set(data) <= kameleoon | extensions
        assert data["conversionCount"] == row["goal_events"]
        assert data["convertedVisitCount"] == row["converted_visits"]
        assert data["revenueCount"] == pytest.approx(row["revenue"], abs=1e-3)
        if row["orders"]:
            assert data["averageCart"] == pytest.approx(row["revenue"] / row["orders"], rel=1e-9)
        else:
            assert data["averageCart"] is None
        rate = min(row[converted], row[unit]) / row[unit]
        assert data["conversionRate"] == pytest.approx(100 * rate, abs=1e-6)
        if variant == 0:
            assert data["improvementRate"] is None and data["reliability"] is None
        else:
            assert 0 <= data["reliability"] <= 100
            control_rate = control["conversions"] / control["visitors"]
            if unit == "visitors":
                lift = 100 * (rate / control_rate - 1)
                # The conversion-rate lift is the goal's own for a conversion goal only.
                key = "improvementRate" if goal == "signup" else "conversionRateImprovementRate"
                assert data[key] == pytest.approx(lift, rel=1e-6)


async def test_contract_and_numbers_match_the_oracle(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    data = await results(client, "exp-b", api_key)
    assert list(data) == ["variationData"]
    assert list(data["variationData"]) == ["_reference", "1", "2"]
    expected = {goal: ingested.expected("exp-b", goal) for goal in GOALS}
    for index, variation in enumerate(data["variationData"].values()):
        assert list(variation["breakdownData"]) == ["_reference"]
        assert_matches(variation["breakdownData"]["_reference"]["generalData"], expected, index)


async def test_visits_converted_visits_goals_and_reference(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    data = await results(
        client,
        "exp-a",
        api_key,
        conversionType="CONVERTED_VISITS",
        visitorData=False,
        goalsIds=["signup"],
        referenceVariationId="1",
    )
    assert list(data["variationData"]) == ["_reference", "0"]
    rows = ingested.expected("exp-a", "signup")
    expected = {"signup": [rows[1], rows[0]]}
    for index, variation in enumerate(data["variationData"].values()):
        general = variation["breakdownData"]["_reference"]["generalData"]
        assert_matches(general, expected, index, unit="visits", converted="converted_visits")


async def test_breakdown_by_device_with_a_country_filter(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    data = await results(
        client,
        "exp-c",
        api_key,
        goalsIds=["purchase"],
        breakdown={"type": "DEVICE_TYPE"},
        filters=[{"type": "COUNTRY", "values": ["US", "CA"], "include": True}],
    )
    cut = restricted(ingested, "exp-c", lambda e: context(e, "country") in ("US", "CA"))
    for index, variation in enumerate(data["variationData"].values()):
        breakdown = variation["breakdownData"]
        assert {"_reference", "mobile", "desktop", "tablet"} <= set(breakdown)
        whole = {"purchase": expected_totals(cut, "exp-c", "purchase")}
        assert_matches(breakdown["_reference"]["generalData"], whole, index)
        for device in ("mobile", "desktop", "tablet"):
            part = restricted(cut, "exp-c", on_device(device))
            rows = {"purchase": expected_totals(part, "exp-c", "purchase")}
            assert_matches(breakdown[device]["generalData"], rows, index)


async def test_daily_breakdown_and_feature_flag_path(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    body = BODY | {"breakdown": {"type": "INTERVAL", "interval": "DAY"}, "goalsIds": ["click"]}
    code = await request_code(client, "/feature-flags/exp-a/results", api_key, body)
    data = await ready(client, code["dataCode"], api_key)
    breakdown = data["variationData"]["_reference"]["breakdownData"]
    assert list(breakdown) == ["_reference", "2026-11-20"]
    assert (
        breakdown["2026-11-20"]["generalData"]["visitorCount"]
        == (ingested.expected("exp-a", "click")[0]["visitors"])
    )


async def test_invalid_requests_are_400(client: httpx.AsyncClient, api_key: str) -> None:
    path = "/experiments/exp-a/results"
    for body in (
        {"dateIntervals": WHOLE_RANGE},
        {**BODY, "dateIntervals": WHOLE_RANGE * 2},
        {**BODY, "breakdown": {"type": "INTERVAL", "interval": "HOUR"}},
        {**BODY, "bayesian": True, "sequentialTesting": True},
        {**BODY, "goalId": ["signup"], "goalsIds": ["click"]},
        {**BODY, "callbackUrl": "file:///etc/passwd"},
        {**BODY, "filters": [{"type": "NEW_VISITOR", "values": ["maybe"]}]},
    ):
        error = await request_code(client, path, api_key, body, status=400)
        assert list(error) == ["error"] and error["error"].endswith(".")


async def test_an_unknown_goal_or_variation_is_404(client: httpx.AsyncClient, api_key: str) -> None:
    path = "/experiments/exp-a/results"
    for body, message in (
        ({**BODY, "goalsIds": ["nope"]}, "Experiment 'exp-a' has no goal 'nope'."),
        ({**BODY, "referenceVariationId": "9"}, "Experiment 'exp-a' has no variation '9'."),
    ):
        assert await request_code(client, path, api_key, body, status=404) == {"error": message}


async def test_unknown_and_expired_codes_are_404(
    client: httpx.AsyncClient, api_namespace: Namespace, api_key: str
) -> None:
    for code in ("nope", "A" * 43):
        response = await client.get("/results", params={"dataCode": code}, headers=auth(api_key))
        assert response.status_code == 404 and response.json() == {
            "error": "This dataCode is unknown or expired."
        }
    code = (await request_code(client, "/experiments/exp-a/results", api_key, BODY))["dataCode"]
    await ready(client, code, api_key)
    settings = api_namespace.settings
    async with Redis.from_url(settings.redis_url) as redis:
        assert 0 < await redis.ttl(data_code_key(settings.key_prefix, code)) <= 3600
        await redis.pexpire(data_code_key(settings.key_prefix, code), 1)
    await asyncio.sleep(0.05)
    response = await client.get("/results", params={"dataCode": code}, headers=auth(api_key))
    assert response.status_code == 404


async def test_keys_and_projects(client: httpx.AsyncClient, api_key: str, rival_key: str) -> None:
    path = "/experiments/exp-a/results"
    assert (await client.post(path, json=BODY)).status_code == 401
    assert (await client.post(path, json=BODY, headers=auth("wrong"))).status_code == 401
    assert (await client.get("/results", params={"dataCode": "x"})).status_code == 401
    await request_code(client, path, rival_key, BODY, status=404)
    await request_code(client, "/experiments/rival-exp/results", api_key, BODY, status=404)
    code = (await request_code(client, path, api_key, BODY))["dataCode"]
    response = await client.get("/results", params={"dataCode": code}, headers=auth(rival_key))
    assert response.status_code == 404
    headers = {"x-api-key": api_key}
    assert (
        await client.get("/results", params={"dataCode": code}, headers=headers)
    ).status_code == 200


async def test_shared_token_reads_one_experiment_only(
    client: httpx.AsyncClient, api_key: str, writer_key: str
) -> None:
    response = await client.post("/experiments/exp-a/share", headers=auth(writer_key))
    assert response.status_code == 200, response.text
    shared = response.json()
    assert set(shared) == {"token", "experimentId", "expiresAt"}
    token = shared["token"]
    assert shared["experimentId"] == "exp-a"
    again = await client.post("/experiments/exp-a/share", headers=auth(writer_key))
    assert again.json()["token"] == token
    data = await results(client, "exp-a", token)
    assert list(data["variationData"]) == ["_reference", "1"]
    await request_code(client, "/experiments/exp-b/results", token, BODY, status=404)
    other = (await request_code(client, "/experiments/exp-b/results", api_key, BODY))["dataCode"]
    response = await client.get("/results", params={"dataCode": other}, headers=auth(token))
    assert response.status_code == 404
    for method, path in (
        ("GET", "/v2/project/shop/experiments"),
        ("GET", "/v2/project/shop/experiment/exp-a/result"),
        ("POST", "/experiments/exp-a/share"),
    ):
        response = await client.request(method, path, headers=auth(token))
        assert response.status_code == 401, path
    assert (await client.post("/experiments/exp-a/share")).status_code == 401


class Counting(BaseHTTPRequestHandler):
    """Counts the requests it receives (and what they carried)."""

    received: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length", 0))
        Counting.received.append(self.rfile.read(length))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def callback_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Counting)
    Counting.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/done"
    server.shutdown()
    server.server_close()


@asynccontextmanager
async def client_of_the_environment(api_namespace: Namespace) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose AB_CALLBACK_ALLOWED_HOSTS is the environment's now."""
    allowed = Settings.from_env().callback_allowed_hosts
    app = create_app(replace(api_namespace.settings, callback_allowed_hosts=allowed))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        yield http
    await app.state.context.redis.aclose()


async def test_callback_only_to_allowed_hosts(
    api_namespace: Namespace,
    ingested: Dataset,
    api_key: str,
    callback_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ALLOWED_HOSTS_ENV, raising=False)
    body = BODY | {"callbackUrl": callback_server}
    path = "/experiments/exp-a/results"
    async with client_of_the_environment(api_namespace) as client:
        error = await request_code(client, path, api_key, body, status=400)
    assert error == {
        "error": "callbackUrl host '127.0.0.1' is not allowed: this server calls back only "
        "the hosts listed in its AB_CALLBACK_ALLOWED_HOSTS setting."
    }
    monkeypatch.setenv(ALLOWED_HOSTS_ENV, "example.org")
    async with client_of_the_environment(api_namespace) as client:
        await request_code(client, path, api_key, body, status=400)
    await asyncio.sleep(0.2)
    assert Counting.received == []
    monkeypatch.setenv(ALLOWED_HOSTS_ENV, "example.org, 127.0.0.1")
    async with client_of_the_environment(api_namespace) as client:
        code = (await request_code(client, path, api_key, body))["dataCode"]
        await ready(client, code, api_key)
        for _ in range(100):
            if Counting.received:
                break
            await asyncio.sleep(0.05)
    assert [json_body for json_body in Counting.received] == [f'{{"dataCode":"{code}"}}'.encode()]


# --- issue 18: the tutorial's names, SDK/TIMEZONE, week intervals, token revocation ----


async def test_the_tutorials_parameter_names_give_the_same_results(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    tutorial = await results(
        client,
        "exp-a",
        api_key,
        conversionType="CONVERTED_VISITS",
        goalId=["signup"],
        referenceVariationId="1",
        sequentialTesting="true",
        visitorData="false",
    )
    reference = await results(
        client,
        "exp-a",
        api_key,
        conversionType="CONVERTED_VISITS",
        goalsIds=["signup"],
        referenceVariationId="1",
        sequentialTesting=True,
        visitorData=False,
    )
    assert tutorial == reference
    assert list(tutorial["variationData"]) == ["_reference", "0"]
    rows = ingested.expected("exp-a", "signup")
    expected = {"signup": [rows[1], rows[0]]}
    for index, variation in enumerate(tutorial["variationData"].values()):
        general = variation["breakdownData"]["_reference"]["generalData"]
        assert_matches(general, expected, index, unit="visits", converted="converted_visits")


def signup_lift(data: dict[str, Any], variation: str = "1") -> dict[str, Any]:
    general = data["variationData"][variation]["breakdownData"]["_reference"]["generalData"]
    return dict(general["goalsData"]["signup"])


async def test_sequential_testing_changes_a_bayesian_experiments_result_or_is_400(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    """exp-a's engine is Bayesian (the default): sequentialTesting asks for the
    frequentist test it is a stopping rule of, whose confidence sequence is wider
    than the fixed-horizon interval around the same lift."""
    signup = {"goalsIds": ["signup"]}
    bayesian = signup_lift(await results(client, "exp-a", api_key, **signup))
    sequential = signup_lift(
        await results(client, "exp-a", api_key, sequentialTesting=True, **signup)
    )
    explicit = signup_lift(
        await results(client, "exp-a", api_key, bayesian=False, sequentialTesting=True, **signup)
    )
    fixed = signup_lift(
        await results(client, "exp-a", api_key, bayesian=False, sequentialTesting=False, **signup)
    )
    assert sequential == explicit
    assert sequential["reliability"] != bayesian["reliability"]
    rows = ingested.expected("exp-a", "signup")
    lift = 100 * (
        (rows[1]["conversions"] / rows[1]["visitors"])
        / (rows[0]["conversions"] / rows[0]["visitors"])
        - 1
    )
    for shown in (sequential, fixed, bayesian):
        assert shown["improvementRate"] == pytest.approx(lift, rel=1e-6)
    (seq_low, seq_high), (low, high) = (
        sequential["improvementInterval"],
        fixed["improvementInterval"],
    )
    assert seq_low < low < lift < high < seq_high
    error = await request_code(
        client,
        "/experiments/exp-a/results",
        api_key,
        BODY | signup | {"bayesian": True, "sequentialTesting": True},
        status=400,
    )
    assert error == {
        "error": "sequentialTesting applies to the frequentist engine only: a Bayesian result "
        "has no sequential form; send bayesian false (or leave it out) for sequential results."
    }


@pytest.mark.parametrize(("kind", "field"), [("SDK", "sdk"), ("TIMEZONE", "timezone")])
async def test_sdk_and_timezone_breakdowns_match_the_oracle(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str, kind: str, field: str
) -> None:
    data = await results(client, "exp-b", api_key, goalsIds=["signup"], breakdown={"type": kind})
    values = {
        context(event, field) for event in ingested.assignments if event["experiment_id"] == "exp-b"
    }
    assert None in values and len(values) >= 3
    expected = {
        value or "(not set)": {
            "signup": expected_totals(
                restricted(ingested, "exp-b", having(field, value)), "exp-b", "signup"
            )
        }
        for value in values
    }
    for index, variation in enumerate(data["variationData"].values()):
        breakdown = variation["breakdownData"]
        assert set(breakdown) == {"_reference", *expected}
        for label, rows in expected.items():
            assert_matches(breakdown[label]["generalData"], rows, index)


def having(field: str, value: object) -> Callable[[Event], bool]:
    """Visitors whose context ``field`` is ``value`` (None: who have none)."""
    return lambda event: context(event, field) == value


async def test_week_and_month_intervals_hold_the_visitors_entering_in_them(
    client: httpx.AsyncClient, ingested: Dataset, api_key: str
) -> None:
    """Every entry is on Friday 2026-11-20: in the week starting Monday 2026-11-16 and
    the month starting 2026-11-01, or a period clipped to an interval starting on it."""
    expected = {goal: ingested.expected("exp-c", goal) for goal in GOALS}
    for interval, start, key in (
        ("WEEK", "2026-11-01", "2026-11-16"),
        ("WEEK", "2026-11-20", "2026-11-20"),
        ("MONTH", "2026-11-01", "2026-11-01"),
        ("MONTH", "2026-11-19", "2026-11-19"),
    ):
        data = await results(
            client,
            "exp-c",
            api_key,
            dateIntervals=[{"start": f"{start}T00:00:00Z", "end": "2026-12-31T23:59:59Z"}],
            breakdown={"type": "INTERVAL", "interval": interval},
        )
        for index, variation in enumerate(data["variationData"].values()):
            breakdown = variation["breakdownData"]
            assert list(breakdown) == ["_reference", key], interval
            assert_matches(breakdown[key]["generalData"], expected, index)
            assert breakdown[key] == breakdown["_reference"]


async def test_a_shared_token_can_be_revoked_and_a_new_one_issued(
    client: httpx.AsyncClient, api_key: str, writer_key: str
) -> None:
    share = "/experiments/exp-c/share"
    first = (await client.post(share, headers=auth(writer_key))).json()["token"]
    await results(client, "exp-c", first)
    # Only a key that may write revokes; a token cannot revoke itself.
    assert (await client.delete(share, headers=auth(api_key))).status_code == 403
    assert (await client.delete(share, headers=auth(first))).status_code == 401
    assert (await client.delete(share)).status_code == 401
    unknown = await client.delete("/experiments/no-such-exp/share", headers=auth(writer_key))
    assert unknown.status_code == 404
    revoked = await client.delete(share, headers=auth(writer_key))
    assert (revoked.status_code, revoked.content) == (204, b"")
    await request_code(client, "/experiments/exp-c/results", first, BODY, status=401)
    again = await client.delete(share, headers=auth(writer_key))
    assert again.status_code == 204  # nothing left to revoke is no error
    issued = await client.post(share, headers=auth(writer_key))
    assert issued.status_code == 200
    second = issued.json()["token"]
    assert second != first
    await results(client, "exp-c", second)
    await request_code(client, "/experiments/exp-c/results", first, BODY, status=401)
