"""`python -m worker keys` and `python -m worker api` command lines against real Redis,
and the API when Redis does not answer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace

import httpx
import pytest
from redis.asyncio import Redis

from tests.dataset import experiment_definitions
from tests.integration.harness import Namespace
from worker.api.app import create_app
from worker.cli.main import main
from worker.store import keys
from worker.store.keys import api_keys_key

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(namespace: Namespace, monkeypatch: pytest.MonkeyPatch) -> Namespace:
    """The namespace's environment for in-process CLI calls, and its definitions in Redis."""
    for name, value in namespace.env.items():
        monkeypatch.setenv(name, value)

    async def store_definitions() -> None:
        async with Redis.from_url(namespace.settings.redis_url) as redis:
            for definition in experiment_definitions():
                await redis.hset(
                    keys.experiments_key(namespace.settings.key_prefix),
                    definition["id"],
                    json.dumps(definition),
                )

    asyncio.run(store_definitions())
    return namespace


def status_with(namespace: Namespace, key: str) -> int:
    """The status of an experiment-details request with ``key``, through the app."""

    async def request() -> int:
        app = create_app(namespace.settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            response = await client.get(
                "/v2/project/shop/experiment/exp-a", headers={"x-api-key": key}
            )
        await app.state.context.redis.aclose()
        return response.status_code

    return asyncio.run(request())


def test_create_list_use_and_revoke_a_key(
    cli_env: Namespace, capsys: pytest.CaptureFixture[str]
) -> None:
    created = subprocess.run(
        [sys.executable, "-m", "worker", "keys", "create", "--project", "shop"],
        env={**os.environ, **cli_env.env},
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip()
    assert key.startswith("abk_") and len(key) > 40 and "\n" not in key
    assert "shown only this once" in created.stderr

    assert main(["keys", "list", "--project", "shop"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 1 and key not in listing[0]
    key_id, created_at, scopes = listing[0].split()
    assert created_at.startswith("20") and scopes == "experiment:read"

    async def stored() -> str:
        async with Redis.from_url(cli_env.settings.redis_url) as redis:
            return str(await redis.hgetall(api_keys_key(cli_env.settings.key_prefix)))

    assert key not in asyncio.run(stored())  # only the hash is kept
    assert status_with(cli_env, key) == 200

    assert main(["keys", "revoke", key_id]) == 0
    assert f"revoked key {key_id} of project shop" in capsys.readouterr().out
    assert status_with(cli_env, key) == 401
    assert main(["keys", "list", "--project", "shop"]) == 0
    assert capsys.readouterr().out == ""


def test_keys_can_be_revoked_by_the_key_itself_and_errors_are_one_sentence(
    cli_env: Namespace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--project", "shop"]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["keys", "revoke", key]) == 0
    assert status_with(cli_env, key) == 401

    assert main(["keys", "revoke", key]) == 1
    assert capsys.readouterr().err.startswith("error: No API key matches")
    assert main(["keys", "create", "--project", "bad key!"]) == 2
    assert "is invalid" in capsys.readouterr().err


def test_commands_explain_an_unreachable_redis_and_a_bad_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["keys", "list", "--project", "shop"]) == 1
    assert "does not answer" in capsys.readouterr().err
    assert main(["api", "--port", "70000"]) == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err


def test_api_without_redis_answers_503_and_never_500(namespace: Namespace) -> None:
    settings = replace(namespace.settings, redis_url="redis://127.0.0.1:1/0")

    async def requests() -> list[httpx.Response]:
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            responses = [
                await client.get("/healthz"),
                await client.get("/v2/project/shop/experiments", headers={"x-api-key": "abk_x"}),
            ]
        await app.state.context.redis.aclose()
        return responses

    for response in asyncio.run(requests()):
        assert response.status_code == 503
        assert response.json() == {
            "error": "The result store (Redis) is unavailable; try again shortly."
        }
