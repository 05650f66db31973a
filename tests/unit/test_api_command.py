"""`python -m worker api`: one process, or AB_API_WORKERS uvicorn processes."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from fastapi import FastAPI

from worker.api.app import app_from_env
from worker.cli import api_command
from worker.errors import WorkerError


def args() -> argparse.Namespace:
    return argparse.Namespace(host="127.0.0.1", port=8123, log_level="warning")


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(api_command.uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    return calls


def test_one_process_serves_the_app_object(
    monkeypatch: pytest.MonkeyPatch, runs: list[tuple[Any, dict[str, Any]]]
) -> None:
    monkeypatch.setenv("AB_API_WORKERS", "1")
    assert api_command.handle(args()) == 0
    [(app, options)] = runs
    assert isinstance(app, FastAPI) and "workers" not in options


def test_several_processes_each_build_the_app_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, runs: list[tuple[Any, dict[str, Any]]]
) -> None:
    monkeypatch.setenv("AB_API_WORKERS", "3")
    assert api_command.handle(args()) == 0
    [(app, options)] = runs
    assert app == "worker.api.app:app_from_env"
    assert options["factory"] is True and options["workers"] == 3
    assert isinstance(app_from_env(), FastAPI)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_fewer_than_one_worker_is_a_one_sentence_error(
    monkeypatch: pytest.MonkeyPatch, runs: list[tuple[Any, dict[str, Any]]], value: str
) -> None:
    monkeypatch.setenv("AB_API_WORKERS", value)
    with pytest.raises(WorkerError, match="AB_API_WORKERS must be at least 1"):
        api_command.handle(args())
    assert runs == []
