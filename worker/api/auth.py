"""API-key authentication, scopes and project scoping.

A key is read from ``Authorization: Bearer <key>`` or ``x-api-key``; it belongs to one
project. A key of another project, a missing experiment and an experiment of
another project all answer the same 404, so nothing can be learnt about other
projects by probing. Each route needs one scope (``worker.store.api_keys.SCOPES``):
reads ``experiment:read``, definition writes and share creation ``experiment:write``,
flag listings ``feature_flag:read``; a key without it gets a 403 in the shape of the
route's family (:data:`ForbiddenBody`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import Depends, Path, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from worker.api.caching.definitions import load_parsed_definition
from worker.api.context import ApiContext, api_context
from worker.api.errors import EXPERIMENT_NOT_FOUND, UNAUTHORIZED, ApiError
from worker.events.experiment import ExperimentDefinition
from worker.store.api_keys import EXPERIMENT_READ, EXPERIMENT_WRITE

IDENTIFIER = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$", re.ASCII)
"""Project keys and experiment ids (``worker.events.fields.Identifier``)."""

PROJECT_NOT_FOUND = "Project not found for this API key."

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
api_key_header = APIKeyHeader(name="x-api-key", auto_error=False, description="The API key")

ProjectKey = Annotated[str, Path(description="The project key the API key belongs to.")]
TestId = Annotated[str, Path(description="The experiment id.")]


ForbiddenBody = Callable[[str, str], Mapping[str, object]]
"""(sentence, missing scope) -> the 403 body of a family that documents its own."""


def error_body(message: str, _: str) -> Mapping[str, object]:
    """The 403 body of the families without a documented one: ``{"error": ...}``."""
    return {"error": message}


def missing_scope(scope: str) -> str:
    """The sentence of a 403."""
    return f"This API key lacks the scope {scope} (see 'python -m worker keys create --scope')."


async def granted_project(
    context: ApiContext,
    key: str | None,
    scope: str = EXPERIMENT_READ,
    forbidden: ForbiddenBody = error_body,
) -> str:
    """The project of ``key`` if it holds ``scope``; a 401 for no or an unknown key, a
    403 without the scope (a key revoked less than ``KEY_CACHE_SECONDS`` ago may still
    pass: see ``caching.api_keys``)."""
    record = await context.keys.record_of(key) if key else None
    if record is None:
        raise ApiError(401, UNAUTHORIZED)
    if not record.allows(scope):
        message = missing_scope(scope)
        raise ApiError(403, message, body=forbidden(message, scope))
    return record.project_key


def scoped_project(
    scope: str, forbidden: ForbiddenBody = error_body
) -> Callable[..., Awaitable[str]]:
    """A dependency: the project of the presented key when it holds ``scope``."""

    async def dependency(
        context: Annotated[ApiContext, Depends(api_context)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        header_key: Annotated[str | None, Security(api_key_header)],
    ) -> str:
        key = credentials.credentials if credentials is not None else header_key
        return await granted_project(context, key, scope, forbidden)

    return dependency


async def key_project(
    context: Annotated[ApiContext, Depends(api_context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    header_key: Annotated[str | None, Security(api_key_header)],
) -> str:
    """Dependency: the project of a presented key that may read (401, 403 otherwise)."""
    key = credentials.credentials if credentials is not None else header_key
    return await granted_project(context, key)


async def authorized_project(
    project_key: ProjectKey, owner: Annotated[str, Depends(key_project)]
) -> str:
    """Dependency: the path's project, when the key belongs to it (else 404)."""
    if project_key != owner:
        raise ApiError(404, PROJECT_NOT_FOUND)
    return project_key


async def authorized_experiment(
    project_key: ProjectKey,
    test_id: TestId,
    owner: Annotated[str, Depends(key_project)],
    context: Annotated[ApiContext, Depends(api_context)],
) -> ExperimentDefinition:
    """Dependency: the path's experiment, when it exists in the key's project (else 404)."""
    return await experiment_in_project(
        context, project_key if project_key == owner else None, test_id
    )


async def experiment_in_project(
    context: ApiContext, project_key: str | None, test_id: str
) -> ExperimentDefinition:
    """The experiment if it belongs to ``project_key``; one 404 for every other case."""
    definition = None
    if project_key is not None and IDENTIFIER.fullmatch(test_id):
        definition = await load_parsed_definition(context.redis, context.prefix, test_id)
    if definition is None or definition.project_key != project_key:
        raise ApiError(404, EXPERIMENT_NOT_FOUND)
    return definition


async def writable_experiment(
    project_key: ProjectKey,
    test_id: TestId,
    owner: Annotated[str, Depends(scoped_project(EXPERIMENT_WRITE))],
    context: Annotated[ApiContext, Depends(api_context)],
) -> ExperimentDefinition:
    """Dependency: the path's experiment, for a key that may write (share links)."""
    return await experiment_in_project(
        context, project_key if project_key == owner else None, test_id
    )


AuthorizedProject = Annotated[str, Depends(authorized_project)]
WritableExperiment = Annotated[ExperimentDefinition, Depends(writable_experiment)]
AuthorizedExperiment = Annotated[ExperimentDefinition, Depends(authorized_experiment)]
