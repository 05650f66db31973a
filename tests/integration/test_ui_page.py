"""The results pages against real Kafka, a real worker and real Redis: in-process for
authentication, parameters and errors, and in headless Chromium against a real
`python -m worker api` server, checking the numbers shown against the JSON API."""

from __future__ import annotations

import dataclasses
import html
import json
import os
import random
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from tests.dataset import Dataset, generate
from tests.integration import browser
from tests.integration import test_api_mida as mida
from tests.integration.harness import (
    Namespace,
    WorkerProcesses,
    free_port,
    store_as_snapshot,
    wait_until_applied,
)
from tests.integration.test_api_mida import BASE, get_json
from tests.integration.test_ingestion import produce_dataset
from worker.api.app import create_app
from worker.events.experiment import ExperimentDefinition
from worker.results.contract import Snapshot, SrmDetected
from worker.results.decisions import decide
from worker.results.experiment_result import result_document
from worker.results.query_totals import QueryTotals
from worker.results.snapshot_job import load_decision_state, record_decisions
from worker.results.variant_totals import VariantTotals
from worker.results.verdict import p_value_text

pytestmark = pytest.mark.integration

# The module fixtures of the Mida API tests (a key, an in-process client and a real
# server, created afresh for this module) over this module's data set: the Mida one,
# spread over DAYS entry days so that the charts have days to draw.
api_namespace = mida.api_namespace
api_key = mida.api_key
writer_key = mida.writer_key
client = mida.client
live_server = mida.live_server

DAYS = 10
SPREAD_SEED = 19


def spread_over_days(data: Dataset, days: int, seed: int) -> Dataset:
    """``data`` with each visitor's events moved by a whole number of days (the same for
    all of the visitor's events, so its entries, visits and conversions keep their
    order); the first day gets few visitors, as a young experiment has. The late tail
    (the visitors that advance the hold clock) moves by the most, to stay last."""
    rng = random.Random(seed)
    weights = [0.15, *([1.0] * (days - 1))]
    shifts: dict[str, timedelta] = {}

    def shift(visitor: str) -> timedelta:
        if visitor not in shifts:
            late = visitor.startswith("late-")
            day = days - 1 if late else rng.choices(range(days), weights)[0]
            shifts[visitor] = timedelta(days=day)
        return shifts[visitor]

    def moved(event: dict[str, Any]) -> dict[str, Any]:
        at = datetime.fromisoformat(event["timestamp"]) + shift(event["visitor_id"])
        return {**event, "timestamp": at.isoformat()}

    messages = []
    for kind, key, value in data.messages:
        event = json.loads(value)
        is_event = isinstance(event, dict) and "timestamp" in event and "visitor_id" in event
        messages.append((kind, key, json.dumps(moved(event)).encode() if is_event else value))
    return Dataset(
        definitions=data.definitions,
        messages=messages,
        assignments=[moved(event) for event in data.assignments],
        conversions=[moved(event) for event in data.conversions],
        expected_dead=data.expected_dead,
    )


@pytest.fixture(scope="module")
async def ingested(
    api_namespace: Namespace, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Dataset]:
    settings = api_namespace.settings
    data = spread_over_days(
        generate(seed=61, visitors=2000, partitions=settings.partitions), DAYS, SPREAD_SEED
    )
    await produce_dataset(api_namespace, data)
    workers = WorkerProcesses(api_namespace, tmp_path_factory.mktemp("ui-worker"))
    workers.start()
    async with Redis.from_url(settings.redis_url) as redis:
        try:
            await wait_until_applied(settings, redis)
        finally:
            workers.stop_all()
    yield data


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ROW = re.compile(
    r'<tr data-variant="([^"]+)">.*?<td class="visitors">([\d,]+)</td>'
    r'<td class="conversions">([\d,]+)</td>',
    re.S,
)


def shown_counts(html: str) -> dict[str, tuple[int, int]]:
    """Visitors and conversions per variant of the page's first variant table."""
    table = html.split('<table class="variants">', 1)[1].split("</table>", 1)[0]
    return {
        variant: (int(visitors.replace(",", "")), int(conversions.replace(",", "")))
        for variant, visitors, conversions in ROW.findall(table)
    }


def api_counts(body: dict[str, object]) -> dict[str, tuple[int, int]]:
    variants = body["variants"]
    assert isinstance(variants, list)
    return {v["variant_id"]: (v["visitors"], v["conversions"]) for v in variants}


async def test_page_shows_the_api_numbers_with_charts_and_form(
    client: httpx.AsyncClient, api_key: str, ingested: Dataset
) -> None:
    for goal in ("purchase", "signup"):
        page = await client.get(
            "/ui/experiments/exp-b",
            params={"goal_key": goal, "filter_by": "mobile"},
            headers={"x-api-key": api_key},
        )
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        body = await get_json(
            client, f"{BASE}/experiment/exp-b/result", api_key, goal_key=goal, filter_by="mobile"
        )
        assert shown_counts(page.text) == api_counts(body)
        assert page.text.count("<svg") == 4
        # The only script is the static page script: nothing inline.
        assert re.findall(r"<script[^>]*>", page.text) == [
            '<script src="/ui/static/page.js" defer>'
        ]
        assert f'<option value="{goal}" selected>' in page.text
        assert 'name="filter_by" value="mobile"' in page.text
        assert "chance to beat control" in page.text or "p = " in page.text


async def test_breakdown_adds_a_table_per_segment(client: httpx.AsyncClient, api_key: str) -> None:
    page = await client.get(
        "/ui/experiments/exp-a", params={"breakdown_by": "device", "key": api_key}
    )
    body = await get_json(client, f"{BASE}/experiment/exp-a/result", api_key, breakdown_by="device")
    assert page.status_code == 200 and len(body["breakdowns"]) >= 3
    assert page.text.count('<table class="variants">') == 1 + len(body["breakdowns"])
    assert f'name="key" value="{api_key}"' in page.text


async def test_list_links_every_experiment_of_the_project(
    client: httpx.AsyncClient, api_key: str, ingested: Dataset
) -> None:
    page = await client.get("/ui/experiments", params={"key": api_key})
    assert page.status_code == 200
    for definition in ingested.definitions:
        assert f'href="/ui/experiments/{definition["id"]}?key={api_key}"' in page.text
    assert "rival-exp" not in page.text


@pytest.mark.parametrize(
    ("path", "params", "status", "sentence"),
    [
        ("/ui/experiments", {}, 401, "Invalid or missing API key."),
        ("/ui/experiments/exp-a", {"key": "wrong"}, 401, "Invalid or missing API key."),
        ("/ui/experiments/rival-exp", {}, 404, "Experiment not found"),
        ("/ui/experiments/exp-a", {"start_date": "<b>x"}, 400, "start_date must be a date"),
        ("/ui/experiments/exp-a", {"goal_key": "<i>"}, 404, "has no goal '<i>'"),
        ("/ui/share/" + "x" * 43, {}, 404, "This share link is unknown"),
    ],
)
async def test_errors_are_small_html_pages(
    client: httpx.AsyncClient,
    api_key: str,
    path: str,
    params: dict[str, str],
    status: int,
    sentence: str,
) -> None:
    headers = {"x-api-key": api_key} if "key" not in params and status != 401 else {}
    page = await client.get(path, params=params, headers=headers)
    assert page.status_code == status
    assert page.headers["content-type"].startswith("text/html")
    # The sentence is escaped (read back unchanged): no markup of the request gets in.
    assert sentence in html.unescape(page.text)
    assert "<i>" not in page.text and "<b>x" not in page.text


async def test_share_link_opens_the_page_without_a_key(
    client: httpx.AsyncClient, api_key: str, writer_key: str
) -> None:
    headers = {"Authorization": f"Bearer {writer_key}"}
    link = await client.post(f"{BASE}/experiment/exp-c/share-link", headers=headers)
    token = link.json()["share_link"].rsplit("/", 1)[1]
    page = await client.get(f"/ui/share/{token}", params={"goal_key": "signup"})
    assert page.status_code == 200
    body = await get_json(client, f"{BASE}/experiment/exp-c/result", api_key, goal_key="signup")
    assert shown_counts(page.text) == api_counts(body)
    assert f'action="/ui/share/{token}"' in page.text


async def test_chromium_renders_the_api_numbers(
    live_server: str, api_key: str, tmp_path: Path
) -> None:
    try:
        browser.chromium()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    url = f"{live_server}/ui/experiments/exp-b?key={api_key}&goal_key=signup"
    dom = browser.dump_dom(url, tmp_path / "profile")
    async with httpx.AsyncClient(base_url=live_server) as http:
        response = await http.get(
            f"{BASE}/experiment/exp-b/result",
            params={"goal_key": "signup"},
            headers={"x-api-key": api_key},
        )
    assert shown_counts(dom) == api_counts(response.json())
    assert dom.count("<svg") == 4
    shot = ARTIFACTS / "ui-experiment-exp-b.png"
    browser.screenshot(url, shot, tmp_path / "profile")
    assert shot.stat().st_size > 10_000


def assert_security_headers(response: httpx.Response) -> None:
    """The /ui security headers: no inline script, no framing, no referrer."""
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy, response.url
    assert "frame-ancestors 'none'" in policy
    assert response.headers.get("x-frame-options") == "DENY", response.url
    assert response.headers.get("referrer-policy") == "no-referrer", response.url


async def test_every_ui_response_carries_the_security_headers(
    client: httpx.AsyncClient, api_key: str
) -> None:
    """Pages, static files, JSON stamps and every error under /ui, the router's own
    404 and 405 included; other paths are left alone."""
    responses = [
        await client.get("/ui/experiments", params={"key": api_key}),
        await client.get("/ui/experiments/exp-a", params={"key": api_key}),
        await client.get("/ui/experiments/exp-a", params={"key": "wrong"}),
        await client.get("/ui/static/page.css"),
        await client.get("/ui/static/nothing.js"),
        await client.get("/ui/experiments/exp-a/stamp", params={"key": api_key}),
        await client.get("/ui/experiments/exp-a", params={"key": api_key, "tz": "99"}),
        await client.get("/ui/no/such/page"),
        await client.get("/ui"),
        await client.post("/ui/experiments", params={"key": api_key}),
    ]
    # /ui redirects to /ui/ (the router adds the slash), an unknown page.
    assert [r.status_code for r in responses] == [200, 200, 401, 200, 404, 200, 400, 404, 307, 405]
    for response in responses:
        assert_security_headers(response)
    assert "<style" not in responses[1].text and " style=" not in responses[1].text
    assert responses[3].headers["content-type"].startswith("text/css")
    # An unknown page is the small HTML error page, like every expected failure here.
    assert responses[7].headers["content-type"].startswith("text/html")
    assert "Error 404" in responses[7].text
    outside = await client.get(f"{BASE}/experiments", headers={"x-api-key": api_key})
    assert outside.status_code == 200 and "x-frame-options" not in outside.headers


async def test_a_ui_page_without_its_store_is_a_503_with_the_security_headers(
    api_namespace: Namespace,
) -> None:
    """Redis unreachable (nothing listens on the port): the page says so, with a 503
    and the security headers."""
    settings = dataclasses.replace(
        api_namespace.settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            for path in ("/ui/experiments", "/ui/experiments/exp-a/stamp"):
                response = await http.get(path, params={"key": "any"})
                assert response.status_code == 503, (path, response.text)
                assert_security_headers(response)
    finally:
        await app.state.context.redis.aclose()


EVERY_PARAMETER = {
    "goal_key": "purchase",
    "start_date": "2026-11-20",
    "end_date": "2026-11-28",
    "tz": "2",
    "filter_by": "mobile,new",
    "breakdown_by": "browser",
    "min_count": "2",
    "timeframe_days": "30",
    "custom_filter": '[[{"criteria": "country", "operator": "==", "value": "US"}]]',
    "event_attribute": '[[{"key": "currency", "operand": "==", "value": "USD"}]]',
}


def form_fields(dom: str) -> dict[str, str]:
    """The name and value of every field of the page's query form, as a GET submit
    would send them (a select's selected option, a textarea's text)."""
    form = dom.split('<form method="get"', 1)[1].split("</form>", 1)[0]
    fields = {
        name: html.unescape(value)
        for name, value in re.findall(r'<input[^>]* name="([^"]+)"[^>]* value="([^"]*)"', form)
    }
    for name, options in re.findall(r'<select name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', options)
        first = re.search(r'<option value="([^"]*)"', options)
        fields[name] = html.unescape((chosen or first).group(1))  # type: ignore[union-attr]
    for name, text in re.findall(r'<textarea name="([^"]+)"[^>]*>(.*?)</textarea>', form, re.S):
        fields[name] = html.unescape(text)
    return fields


def test_chromium_form_round_trips_every_parameter(
    live_server: str, api_key: str, tmp_path: Path
) -> None:
    url = f"{live_server}/ui/experiments/exp-a?" + urlencode({**EVERY_PARAMETER, "key": api_key})
    dom = browser.dump_dom(url, tmp_path / "profile")
    fields = form_fields(dom)
    # The address a submit of the unchanged form goes to is the address of this view.
    assert fields == {**EVERY_PARAMETER, "key": api_key}
    submitted = parse_qs(urlencode(fields))
    assert {name: values[0] for name, values in submitted.items()} == fields


def lift_axis(dom: str) -> tuple[float, float, int, list[tuple[str, str, str, str]]]:
    """The lift chart's axis (low, high), the day it is fitted from, and each point's
    (day, lift, interval low, interval high) as its hover title says them."""
    svg = dom.split('id="lift-chart"', 1)[1].split("</svg>", 1)[0]
    low = float(re.search(r'data-y-low="([^"]+)"', svg).group(1))  # type: ignore[union-attr]
    high = float(re.search(r'data-y-high="([^"]+)"', svg).group(1))  # type: ignore[union-attr]
    fit = int(re.search(r'data-fit-from="(\d+)"', svg).group(1))  # type: ignore[union-attr]
    points = re.findall(
        r"<title>[^<]* · (\d{4}-\d\d-\d\d): ([^ ]+) % \(interval ([^ ]+) % to ([^ ]+) %\)</title>",
        svg,
    )
    return low, high, fit, points


OWN_LIFT = {
    "signup": ("improvement", "statistics", "conversion rate"),
    "purchase": (
        "revenue_per_visitor_improvement",
        "revenue_per_visitor_statistics",
        "revenue per visitor",
    ),
    "click": (
        "events_per_visitor_improvement",
        "events_per_visitor_statistics",
        "events per visitor",
    ),
}
"""Per goal of the data set (conversion, revenue, count): the Mida fields of the lift
and the interval of its own metric, and that metric's name."""


@pytest.mark.parametrize("goal", ["signup", "purchase", "click"])
async def test_chromium_lift_axis_fits_the_band(
    live_server: str, api_key: str, tmp_path: Path, ingested: Dataset, goal: str
) -> None:
    """The lift chart draws the goal's own metric (the conversion rate, revenue or
    events per visitor): its last day is the API's lift and interval of that metric,
    and its axis fits the band from the first day every arm has 100 visitors."""
    url = f"{live_server}/ui/experiments/exp-a?key={api_key}&goal_key={goal}"
    dom = browser.dump_dom(url, tmp_path / "profile")
    low, high, fit, points = lift_axis(dom)
    improvement, statistics, metric = OWN_LIFT[goal]
    assert f"Lift of the {metric} against the control" in dom
    async with httpx.AsyncClient(base_url=live_server) as http:
        response = await http.get(
            f"{BASE}/experiment/exp-a/result",
            params={"goal_key": goal},
            headers={"x-api-key": api_key},
        )
    treatment = response.json()["variants"][1]
    stats = treatment[statistics]
    interval = stats["credible_interval"] or stats["confidence_interval"]
    # The last day counts every visitor: the chart's point is the API's pair.
    assert points[-1][1:] == tuple(
        f"{value:+,.2f}" for value in (treatment[improvement], *interval)
    ), (points[-1], treatment)
    bands = [(day, float(a.replace(",", "")), float(b.replace(",", ""))) for day, _, a, b in points]
    # The first day every arm has 100 visitors, counted from the data set itself.
    first_days = sorted(
        {
            event["timestamp"][:10]
            for event in ingested.assignments
            if event["experiment_id"] == "exp-a"
        }
    )
    per_day = [[0, 0] for _ in first_days]
    seen: set[str] = set()
    for event in ingested.assignments:
        visitor = event["visitor_id"]
        if event["experiment_id"] != "exp-a" or visitor in seen:
            continue
        seen.add(visitor)
        per_day[first_days.index(event["timestamp"][:10])][int(event["variant_id"])] += 1
    cumulative = [
        sum(day[arm] for day in per_day[: index + 1])
        for index in range(len(per_day))
        for arm in (0, 1)
    ]
    expected_fit = next(i for i in range(len(per_day)) if min(cumulative[2 * i : 2 * i + 2]) >= 100)
    assert fit == expected_fit > 0
    fitted = [band for band in bands if band[0] >= first_days[fit]]
    assert fitted, dom
    band_low = min(b[1] for b in fitted)
    band_high = max(b[2] for b in fitted)
    # Every fitted interval is inside the axis, and the axis is no wider than those
    # intervals (and zero) rounded out to one tick step on each side.
    span = max(band_high, 0.0) - min(band_low, 0.0)
    assert low <= band_low and band_high <= high
    assert high - low <= span * 2.0 + 1e-9, (low, high, band_low, band_high)


async def test_chromium_shows_the_decision_banner_then_the_srm_alarm(
    live_server: str, api_key: str, api_namespace: Namespace, ingested: Dataset, tmp_path: Path
) -> None:
    """The banner follows the decision state the worker stores, and the timeline under it
    the decision events, newest first (both written here by the worker's own decide and
    store functions): nothing, then a winner, then an SRM alarm that withdraws it."""
    settings = api_namespace.settings
    url = f"{live_server}/ui/experiments/exp-c?key={api_key}"
    definition = ExperimentDefinition.model_validate(
        next(d for d in ingested.definitions if d["id"] == "exp-c")
    )
    start = datetime(2026, 11, 20, 8, tzinfo=UTC)

    def banner() -> tuple[str, str]:
        dom = browser.dump_dom(url, tmp_path / "profile")
        section = dom.split('id="decision"', 1)[1].split("</section>", 1)[0]
        state = re.search(r'data-state="(\w+)"', section).group(1)  # type: ignore[union-attr]
        return state, html.unescape(re.sub(r"<[^>]+>", " ", section))

    def timeline() -> tuple[list[tuple[str, str]], str]:
        """The timeline's (kind, text) items, in page order, and its whole text."""
        page = httpx.get(url)
        assert page.status_code == 200
        found = re.search(r'id="decision-history"[^>]*>(.*?)</section>', page.text, re.S)
        assert found is not None, page.text
        section = found.group(1)
        items = re.findall(r'<li data-kind="(\w+)">(.*?)</li>', section)
        return [(kind, text_of(item)) for kind, item in items], text_of(section)

    def snapshot(hour: int, visitors: tuple[int, ...], conversions: tuple[int, ...]) -> Snapshot:
        """A snapshot of exp-c computed ``hour`` hours after ``start``: each order 20.5."""
        rows = [
            VariantTotals(
                str(i), visitors=v, conversions=c, orders=c, revenue=20.5 * c,
                revenue_sum_squares=600.25 * c,
            )
            for i, (v, c) in enumerate(zip(visitors, conversions, strict=True))
        ]  # fmt: skip
        totals = {goal.key: QueryTotals(rows) for goal in definition.goals}
        return Snapshot(
            document=result_document(definition, totals),
            applied_offsets={},
            computed_at=start + timedelta(hours=hour),
            interval_index=0,
            computed_by="test",
        )

    async with Redis.from_url(settings.redis_url) as redis:
        assert banner()[0] == "running"
        assert timeline() == ([], "Decision history No decisions yet.")
        stored = await load_decision_state(redis, settings.key_prefix, "exp-c")
        # V2 converts 30 % more, on 20,000 visitors an arm: a winner by any rule.
        won = decide(definition, stored, snapshot(0, (20_000,) * 3, (2_000, 2_000, 2_600)))
        assert [(e.kind, e.variant_id) for e in won.events] == [("winner_declared", "2")]
        await record_decisions(redis, settings, "exp-c", won)
        state, text = banner()
        assert state == "winner" and "Winner declared: V2" in text
        assert "sequential rule" in text and "winner declared × 1" in text
        assert timeline()[0] == [
            ("winner_declared", "2026-11-20 08:00:00 UTC Winner declared: V2, by the "
             "sequential rule of the bayesian engine at 95 %"),
        ]  # fmt: skip
        # 3,000 visitors too many in V2: the alarm is raised and withdraws the winner.
        alarm = decide(definition, won.state, snapshot(1, (20_000, 20_000, 23_000), (2_000,) * 3))
        srm = alarm.events[0]
        assert isinstance(srm, SrmDetected) and srm.srm_sequential_p_value is not None
        await record_decisions(redis, settings, "exp-c", alarm)
        await record_decisions(redis, settings, "exp-c", alarm)  # a repeat adds nothing
        result = httpx.get(
            f"{live_server}{BASE}/experiment/exp-c/result", headers={"x-api-key": api_key}
        ).json()
        state, text = banner()
        assert state == "alarm" and "Sample ratio mismatch" in text
        assert "srm detected × 1" in text
        assert result["srm_p_value"] is None or "p = " in text
        p = p_value_text(srm.srm_sequential_p_value)
        assert timeline()[0] == [
            ("winner_withdrawn", "2026-11-20 09:00:00 UTC Winner withdrawn: V2, by the SRM "
             "alarm"),
            ("srm_detected", f"2026-11-20 09:00:00 UTC Sample ratio mismatch alarm raised "
             f"(sequential test p = {p})"),
            ("winner_declared", "2026-11-20 08:00:00 UTC Winner declared: V2, by the "
             "sequential rule of the bayesian engine at 95 %"),
        ]  # fmt: skip


def text_of(markup: str) -> str:
    """The text a reader sees in ``markup``: tags out, entities decoded, spaces joined."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "ui-results-page.png"
"""The README's picture of the page: the 1400 px screenshot, copied there when the
environment sets AB_UI_SCREENSHOT_DOCS=1."""


def test_chromium_screenshots_at_desktop_and_phone_widths(
    live_server: str, api_key: str, tmp_path: Path
) -> None:
    url = f"{live_server}/ui/experiments/exp-b?key={api_key}&goal_key=purchase"
    for width, height in ((1400, 4400), (390, 6400)):
        shot = ARTIFACTS / f"ui-experiment-{width}.png"
        browser.screenshot(url, shot, tmp_path / "profile", window=(width, height))
        assert shot.stat().st_size > 10_000
    if os.environ.get("AB_UI_SCREENSHOT_DOCS") == "1":
        shutil.copyfile(ARTIFACTS / "ui-experiment-1400.png", DOCS_SCREENSHOT)


async def test_chromium_page_fits_390_px_and_the_form_is_reachable_by_keyboard(
    live_server: str, api_key: str, tmp_path: Path
) -> None:
    """At 390 px only the wide tables and charts scroll sideways (inside their boxes),
    never the page; Tab reaches every field of the form and its button in order."""
    async with browser.Page(tmp_path / "profile", window=(390, 900)) as page:
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=390,
            height=900,
            deviceScaleFactor=1,
            mobile=True,
        )
        await page.goto(f"{live_server}/ui/experiments/exp-b?key={api_key}")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        fields = await page.evaluate(
            "[...document.querySelectorAll('#query select, #query input:not([type=hidden]),"
            " #query textarea, #query button[type=submit]')].map(e => e.name || e.type)"
        )
        reached = []
        for _ in range(60):
            await page.send(
                "Input.dispatchKeyEvent",
                type="keyDown",
                key="Tab",
                code="Tab",
                windowsVirtualKeyCode=9,
            )
            await page.send(
                "Input.dispatchKeyEvent",
                type="keyUp",
                key="Tab",
                code="Tab",
                windowsVirtualKeyCode=9,
            )
            # The builders' own controls (tested apart) are skipped here.
            focused = await page.evaluate(
                "(e => e.closest('#query') && !e.closest('.builder') ? (e.name || e.type)"
                " : null)(document.activeElement)"
            )
            if focused and focused not in reached:
                reached.append(focused)
        assert reached == fields


async def test_chromium_page_refreshes_when_a_new_snapshot_lands(
    live_server: str, api_key: str, api_namespace: Namespace, ingested: Dataset, tmp_path: Path
) -> None:
    """exp-draft has no traffic: visitors on its page can only come from the snapshot
    stored while the page is open, which the page script must notice and load."""
    definition = ExperimentDefinition.model_validate(
        next(d for d in ingested.definitions if d["id"] == "exp-draft")
    )
    rows = [
        VariantTotals("0", visitors=40, conversions=4),
        VariantTotals("1", visitors=60, conversions=9),
    ]
    document = result_document(definition, {g.key: QueryTotals(rows) for g in definition.goals})
    async with browser.Page(tmp_path / "profile") as page:
        await page.goto(f"{live_server}/ui/experiments/exp-draft?key={api_key}")
        assert await page.evaluate("document.getElementById('total-visitors').textContent") == "0"
        form_text = "document.getElementById('field-filter_by')"
        await page.evaluate(f"{form_text}.value = 'typed, not submitted'")
        async with Redis.from_url(api_namespace.settings.redis_url) as redis:
            await store_as_snapshot(redis, api_namespace.settings.key_prefix, document)
        shown = "document.getElementById('total-visitors').textContent === '100'"
        await page.wait_for(shown, timeout=40)
        assert "Updated at" in await page.evaluate(
            "document.getElementById('live-status').textContent"
        )
        # Only the results were swapped: what the reader typed in the form stays.
        assert await page.evaluate(f"{form_text}.value") == "typed, not submitted"


async def test_chromium_shows_busy_retrying_on_a_503(
    live_server: str, api_key: str, tmp_path: Path
) -> None:
    async with browser.Page(tmp_path / "profile") as page:
        await page.goto(f"{live_server}/ui/experiments/exp-a?key={api_key}")
        page.answers["/stamp"] = (503, {"Retry-After": "4", "Content-Type": "application/json"})
        await page.send("Fetch.enable", patterns=[{"urlPattern": "*/stamp*"}])
        status = "document.getElementById('live-status').textContent"
        said = await page.wait_for(f"{status}.startsWith('Busy, retrying in') && {status}")
        assert re.fullmatch(r"Busy, retrying in [1-4] s", said)
        del page.answers["/stamp"]
        await page.wait_for(f"!{status}.startsWith('Busy')", timeout=30)


async def test_chromium_share_button_creates_and_revokes_a_link(
    live_server: str, writer_key: str, api_key: str, tmp_path: Path
) -> None:
    async with browser.Page(tmp_path / "profile") as page:
        await page.goto(f"{live_server}/ui/experiments/exp-a?key={api_key}")
        # A read-only key is refused with the API's sentence.
        await page.evaluate("document.getElementById('share-create').click()")
        output = "document.getElementById('share-output').textContent"
        refused = await page.wait_for(f"!{output}.endsWith('…') && {output}")
        assert "scope" in refused.lower() or "write" in refused.lower(), refused
        await page.evaluate(f"document.getElementById('share-key').value = '{writer_key}'")
        await page.evaluate("document.getElementById('share-create').click()")
        link = await page.wait_for("document.getElementById('share-link')?.href")
        async with httpx.AsyncClient() as http:
            shared = await http.get(link)
            assert shared.status_code == 200 and "Experiment exp-a" in shared.text
            await page.evaluate("document.getElementById('share-revoke').click()")
            await page.wait_for(f"{output} === 'The share link is revoked.'")
            assert (await http.get(link)).status_code == 404


async def test_chromium_filter_builder_writes_the_custom_filter(
    live_server: str, api_key: str, tmp_path: Path
) -> None:
    """The builder is drawn from the address's custom_filter, writes every change back
    as JSON, and the submitted address carries it (and the page applies it)."""
    start = [[{"criteria": "device", "operator": "==", "value": "mobile", "key": ""}]]
    query = urlencode({"key": api_key, "custom_filter": json.dumps(start)})
    async with browser.Page(tmp_path / "profile") as page:
        await page.goto(f"{live_server}/ui/experiments/exp-a?{query}")
        rows = "document.querySelectorAll('#query .builder-row')"
        assert await page.evaluate(f"{rows}.length") == 1
        value = "[data-field=value]"
        assert await page.evaluate(f"{rows}[0].querySelector('{value}').value") == "mobile"
        # A blank text field of a condition says which field it is.
        assert await page.evaluate(f"{rows}[0].querySelector('{value}').placeholder") == "value"
        # A second AND group: country == US.
        await page.evaluate(
            "[...document.querySelectorAll('#query .builder > button')]"
            ".find(b => b.textContent === 'Add and group').click()"
        )
        await page.evaluate(
            f"""(() => {{
                const row = {rows}[1];
                const set = (field, value) => {{
                    const input = row.querySelector(`[data-field=${{field}}]`);
                    input.value = value;
                    input.dispatchEvent(new Event('change'));
                }};
                set('criteria', 'country'); set('operator', '=='); set('value', 'US');
            }})()"""
        )
        written = json.loads(
            await page.evaluate("document.getElementById('field-custom_filter').value")
        )
        assert written == [
            *start,
            [{"criteria": "country", "operator": "==", "value": "US", "key": ""}],
        ]
        # The submitted page is a new document: the marker set on this one is gone.
        await page.evaluate("window.beforeSubmit = true")
        await page.evaluate("document.querySelector('#query button[type=submit]').click()")
        await page.wait_for(
            "!window.beforeSubmit && document.readyState === 'complete'"
            " && !!document.getElementById('total-visitors')"
        )
        address = parse_qs(urlsplit(await page.evaluate("location.href")).query)
        assert json.loads(address["custom_filter"][0]) == written
        shown = int(
            (await page.evaluate("document.getElementById('total-visitors').textContent")).replace(
                ",", ""
            )
        )
    async with httpx.AsyncClient(base_url=live_server) as http:
        response = await http.get(
            f"{BASE}/experiment/exp-a/result",
            params={"custom_filter": json.dumps(written)},
            headers={"x-api-key": api_key},
        )
    assert shown == response.json()["total_visitors"]
