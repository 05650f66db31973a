"""The results pages: server-rendered HTML with inline SVG charts.

Same authentication as the API (``Authorization: Bearer``, ``x-api-key``) plus
``?key=`` so a browser can open a page, or a Mida share-link token. Form fields are
Mida's result parameters, parsed by ``mida.params``. Every expected failure, an unknown
page included, is a small HTML page with the API's sentence and status code. Every
response carries the security headers (``headers``, set by its middleware): the
stylesheet and the one script are static files served here, so the
Content-Security-Policy allows no inline script or style and no other origin.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import TypeAdapter

from worker.api.auth import api_key_header, bearer, experiment_in_project, key_project
from worker.api.context import ApiContext, api_context
from worker.api.errors import STORAGE_DOWN, ApiError, error_headers
from worker.api.mida.params import ResultParams, result_query
from worker.api.mida.routes import shared_experiment
from worker.api.mida.shapes import result_response
from worker.api.ui.render import ExperimentPage, error_page, experiment_page, list_page
from worker.events.experiment import ExperimentDefinition
from worker.results.contract import AnyDecisionEvent
from worker.results.decisions import DecisionState
from worker.store.connection import REDIS_UNAVAILABLE
from worker.store.definitions import load_definitions
from worker.store.snapshots import decision_history, load_decision_state, stored_snapshot

router = APIRouter(prefix="/ui", include_in_schema=False)

DECISION_EVENTS = TypeAdapter(list[AnyDecisionEvent])
"""The stored decision history as the event models (the store keeps their JSON)."""
STATIC_FILES = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}
"""The files of worker/api/ui/static/ served at /ui/static/{name}, with their types."""

Context = Annotated[ApiContext, Depends(api_context)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
HeaderKey = Annotated[str | None, Security(api_key_header)]
QueryKey = Annotated[str | None, Query(alias="key")]
Text = Annotated[str | None, Query()]


def form_params(
    goal_key: Text = None,
    filter_by: Text = None,
    start_date: Text = None,
    end_date: Text = None,
    breakdown_by: Text = None,
    tz: Text = None,
    custom_filter: Text = None,
    event_attribute: Text = None,
    min_count: Text = None,
    timeframe_days: Text = None,
) -> dict[str, str | None]:
    """Dependency: the page's form fields as text, blank ones as absent (parsed later,
    by ``result_params``, so that a bad value becomes an error page rather than a
    validation error)."""
    fields = {
        "goal_key": goal_key,
        "filter_by": filter_by,
        "start_date": start_date,
        "end_date": end_date,
        "breakdown_by": breakdown_by,
        "tz": tz,
        "custom_filter": custom_filter,
        "event_attribute": event_attribute,
        "min_count": min_count,
        "timeframe_days": timeframe_days,
    }
    return {name: value if value and value.strip() else None for name, value in fields.items()}


WHOLE_NUMBERS = {"min_count": (1, 1_000_000), "timeframe_days": (1, 3650)}
"""The form's whole-number fields and their bounds (those of the Mida API's query)."""


def result_params(fields: dict[str, str | None]) -> ResultParams:
    """Mida's result parameters from the form's fields; a 400 for a whole-number field
    out of its bounds (the others are judged by ``result_query``, as in the API)."""
    numbers: dict[str, int | None] = {}
    for name, (low, high) in WHOLE_NUMBERS.items():
        raw = fields[name]
        if raw is not None and not (raw.isdigit() and low <= int(raw) <= high):
            raise ApiError(400, f"{name} must be a whole number from {low} to {high}.")
        numbers[name] = None if raw is None else int(raw)
    return ResultParams(
        start_date=fields["start_date"],
        end_date=fields["end_date"],
        tz=fields["tz"],
        goal_key=fields["goal_key"],
        filter_by=fields["filter_by"],
        custom_filter=fields["custom_filter"],
        breakdown_by=fields["breakdown_by"],
        event_attribute=fields["event_attribute"],
        min_count=numbers["min_count"],
        timeframe_days=numbers["timeframe_days"],
    )


FormParams = Annotated[dict[str, str | None], Depends(form_params)]


@router.get("/experiments", response_class=HTMLResponse)
async def experiments(
    context: Context, credentials: Bearer, header_key: HeaderKey, key: QueryKey = None
) -> HTMLResponse:
    """The caller's project's experiments, each linking to its results page."""

    async def build() -> str:
        project = await key_project(context, credentials, header_key or key)
        mine = [
            definition
            for definition in await load_definitions(context.redis, context.prefix)
            if definition.project_key == project
        ]
        suffix = "" if key is None else "?" + urlencode({"key": key})
        links = [(d, f"/ui/experiments/{quote(d.id, safe='')}{suffix}") for d in mine]
        return list_page(project, links)

    return await _html(build())


@router.get("/experiments/{test_id}", response_class=HTMLResponse)
async def experiment(
    test_id: str,
    context: Context,
    credentials: Bearer,
    header_key: HeaderKey,
    params: FormParams,
    key: QueryKey = None,
) -> HTMLResponse:
    """The results page of one experiment of the caller's project."""

    async def build() -> str:
        project = await key_project(context, credentials, header_key or key)
        definition = await experiment_in_project(context, project, test_id)
        action = f"/ui/experiments/{quote(test_id, safe='')}"
        share_api = (
            f"/v2/project/{quote(project, safe='')}/experiment/{quote(test_id, safe='')}/share-link"
        )
        return await _results(context, definition, params, action, key, share_api)

    return await _html(build())


@router.get("/experiments/{test_id}/stamp")
async def experiment_stamp(
    test_id: str,
    context: Context,
    credentials: Bearer,
    header_key: HeaderKey,
    key: QueryKey = None,
) -> JSONResponse:
    """``{"stamp"}``: tells the stored snapshot apart from the next one (the page script
    polls it and fetches the page again when it changes)."""

    async def build() -> str:
        project = await key_project(context, credentials, header_key or key)
        definition = await experiment_in_project(context, project, test_id)
        return await snapshot_stamp(context, definition.id)

    return await _json(build())


@router.get("/share/{token}/stamp")
async def shared_stamp(token: str, context: Context) -> JSONResponse:
    """The stamp of the experiment a share link serves."""

    async def build() -> str:
        definition = await shared_experiment(context, token)
        return await snapshot_stamp(context, definition.id)

    return await _json(build())


@router.get("/share/{token}", response_class=HTMLResponse)
async def shared(
    token: str,
    context: Context,
    params: FormParams,
) -> HTMLResponse:
    """The results page of the experiment a share link serves, without a key."""

    async def build() -> str:
        definition = await shared_experiment(context, token)
        return await _results(context, definition, params, f"/ui/share/{token}", None, None)

    return await _html(build())


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """The stylesheet or the page script (404 for any other name)."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return not_found()
    text = resources.files("worker.api.ui").joinpath("static", name).read_text()
    return Response(text, media_type=media_type)


@router.get("/{path:path}", response_class=HTMLResponse)
async def unknown(path: str) -> HTMLResponse:
    """Any other address under /ui (matched last): the 404 error page, not the API's
    JSON error."""
    return not_found()


def not_found() -> HTMLResponse:
    """The error page of an address that serves nothing."""
    return HTMLResponse(error_page(404, "Not Found"), 404)


async def snapshot_stamp(context: ApiContext, experiment_id: str) -> str:
    """A digest of the experiment's stored snapshot ("" before the first): it changes
    exactly when a new snapshot lands."""
    raw = await stored_snapshot(context.redis, context.prefix, experiment_id)
    return "" if raw is None else hashlib.sha256(raw).hexdigest()[:16]


async def _json(stamp: Awaitable[str]) -> JSONResponse:
    """``{"stamp"}``, or the API's ``{"error"}`` with its status and headers."""
    try:
        return JSONResponse({"stamp": await stamp})
    except ApiError as error:
        headers = error_headers(error.status_code, error.headers)
        return JSONResponse({"error": error.message}, error.status_code, headers)
    except REDIS_UNAVAILABLE:
        return JSONResponse({"error": STORAGE_DOWN}, 503)


async def _html(page: Awaitable[str]) -> HTMLResponse:
    """The page, or the error page of an expected failure (never a 500 for those)."""
    try:
        return HTMLResponse(await page)
    except ApiError as error:
        return HTMLResponse(
            error_page(error.status_code, error.message),
            error.status_code,
            error_headers(error.status_code, error.headers),
        )
    except REDIS_UNAVAILABLE:
        return HTMLResponse(error_page(503, STORAGE_DOWN), 503)


async def _results(
    context: ApiContext,
    definition: ExperimentDefinition,
    fields: dict[str, str | None],
    action: str,
    key: str | None,
    share_api: str | None,
) -> str:
    """The experiment page for the parameters: the result as the API answers it, the
    daily cohorts (accumulated for the rate chart) and the cumulative results per day
    (the engine's lift and interval for every visitor up to that day)."""
    params = result_params(fields)
    query = result_query(params, definition)
    # Read before the numbers: a snapshot landing in between then costs one refresh
    # more, never a missed one.
    stamp = await snapshot_stamp(context, definition.id)
    goal = query.goal_key(definition)
    document = await context.results.document(definition, query)
    result = result_response(definition, document, goal, definition.ended_at, datetime.now(UTC))
    series = query.model_copy(update={"breakdown": None, "goal": goal})
    daily = await context.results.daily(definition, series)
    days = [day for day, _ in daily]
    cumulative = await context.results.cumulative(definition, series, days)
    state = await load_decision_state(context.redis, context.prefix, definition.id)
    history = await decision_history(context.redis, context.prefix, definition.id)
    return experiment_page(
        ExperimentPage(
            definition=definition,
            result=result,
            document=document,
            params=params,
            action=action,
            key=key,
            days=days,
            daily=[day_document for _, day_document in daily],
            cumulative=cumulative,
            decision=DecisionState.model_validate(state),
            history=DECISION_EVENTS.validate_python(history),
            stamp=stamp,
            stamp_url=f"{action}/stamp" + ("" if key is None else "?" + urlencode({"key": key})),
            share_api=share_api,
        )
    )
