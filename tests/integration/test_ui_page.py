"""The results pages against real Kafka, a real worker and real Redis: in-process for
authentication, parameters and errors, and in headless Chromium against a real
`python -m worker api` server, checking the numbers shown against the JSON API."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.dataset import Dataset
from tests.integration import browser
from tests.integration import test_api_mida as mida
from tests.integration.test_api_mida import BASE, get_json

pytestmark = pytest.mark.integration

# The module fixtures of the Mida API tests: one ingested data set, a key, an in-process
# client and a real server, created afresh for this module.
api_namespace = mida.api_namespace
ingested = mida.ingested
api_key = mida.api_key
writer_key = mida.writer_key
client = mida.client
live_server = mida.live_server

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
        assert page.text.count("<svg") == 2 and "<script" not in page.text
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
        ("/ui/experiments/exp-a", {"goal_key": "<i>"}, 404, "has no goal &#x27;&lt;i&gt;&#x27;"),
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
    assert sentence in page.text and "<i>" not in page.text and "<b>x" not in page.text


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
    assert dom.count("<svg") == 2
    shot = ARTIFACTS / "ui-experiment-exp-b.png"
    browser.screenshot(url, shot, tmp_path / "profile")
    assert shot.stat().st_size > 10_000
