"""API-key authentication and project scoping.

A key is read from ``Authorization: Bearer <key>`` or ``x-api-key``; it belongs to one
project. A key of another project, a missing experiment and an experiment of
another project all answer the same 404, so nothing can be learnt about other
projects by probing.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Path, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from worker.api.caching.definitions import load_parsed_definition
from worker.api.context import ApiContext, api_context
from worker.api.errors import EXPERIMENT_NOT_FOUND, UNAUTHORIZED, ApiError
from worker.events.experiment import ExperimentDefinition

IDENTIFIER = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$", re.ASCII)
"""Project keys and experiment ids (``worker.events.fields.Identifier``)."""

PROJECT_NOT_FOUND = "Project not found for this API key."

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
api_key_header = APIKeyHeader(name="x-api-key", auto_error=False, description="The API key")

ProjectKey = Annotated[str, Path(description="The project key the API key belongs to.")]
TestId = Annotated[str, Path(description="The experiment id.")]


async def key_project(
    context: Annotated[ApiContext, Depends(api_context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    header_key: Annotated[str | None, Security(api_key_header)],
) -> str:
    """Dependency: the project of the presented key, or a 401 (a key revoked less than
    ``KEY_CACHE_SECONDS`` ago may still pass: see ``caching.api_keys``)."""
    key = credentials.credentials if credentials is not None else header_key
    project = await context.keys.project_of(key) if key else None
    if project is None:
        raise ApiError(401, UNAUTHORIZED)
    return project


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


AuthorizedProject = Annotated[str, Depends(authorized_project)]
AuthorizedExperiment = Annotated[ExperimentDefinition, Depends(authorized_experiment)]
