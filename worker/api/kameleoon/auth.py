"""Who may call the Kameleoon routes: a project API key, or a Kameleoon shared token.

A shared token is created by ``POST /experiments/{id}/share``, expires, and reads that
one experiment's Kameleoon results and nothing else. Tokens live in their own key
space (``worker.store.share_links`` under ``keys.kameleoon_share_prefix``), so a Mida
share link is no Kameleoon token and the other way round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials

from worker.api.auth import api_key_header, bearer, experiment_in_project, missing_scope
from worker.api.context import ApiContext, api_context
from worker.api.errors import UNAUTHORIZED, ApiError
from worker.events.experiment import ExperimentDefinition
from worker.store import keys
from worker.store.api_keys import EXPERIMENT_READ, find_key
from worker.store.share_links import TOKEN_PATTERN, find_share_link

_TOKEN = re.compile(TOKEN_PATTERN, re.ASCII)


@dataclass(frozen=True)
class Caller:
    """A project's key (``experiment_id`` None) or a token scoped to one experiment."""

    project_key: str
    experiment_id: str | None = None

    def may_read(self, project_key: str, experiment_id: str) -> bool:
        """Whether this caller may read the experiment's results."""
        return project_key == self.project_key and self.experiment_id in (None, experiment_id)


async def kameleoon_caller(
    context: Annotated[ApiContext, Depends(api_context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    header_key: Annotated[str | None, Security(api_key_header)],
) -> Caller:
    """Dependency: the caller of a presented key that may read or of a shared token
    (which reads one experiment), else a 401 (a 403 for a key without the scope)."""
    secret = credentials.credentials if credentials is not None else header_key
    if secret:
        record = await find_key(context.redis, context.prefix, secret)
        if record is not None:
            if not record.allows(EXPERIMENT_READ):
                raise ApiError(403, missing_scope(EXPERIMENT_READ))
            return Caller(record.project_key)
        if _TOKEN.fullmatch(secret):
            link = await find_share_link(
                context.redis, keys.kameleoon_share_prefix(context.prefix), secret
            )
            if link is not None:
                return Caller(link.project_key, link.experiment_id)
    raise ApiError(401, UNAUTHORIZED)


async def readable_experiment(
    context: ApiContext, caller: Caller, experiment_id: str
) -> ExperimentDefinition:
    """The experiment when the caller may read it; one 404 for every other case."""
    allowed = caller.may_read(caller.project_key, experiment_id)
    return await experiment_in_project(
        context, caller.project_key if allowed else None, experiment_id
    )


KameleoonCaller = Annotated[Caller, Depends(kameleoon_caller)]
