"""The shared error handlers: shapes and the headers a status calls for."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from worker.api.errors import install_error_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    # Two routes on one path, as the write APIs declare them: the Allow header must
    # name the methods of both, not only those of the first route Starlette tried.
    @app.get("/things/{thing}")
    async def read(thing: str) -> dict[str, str]:
        return {"thing": thing}

    @app.patch("/things/{thing}")
    async def change(thing: str) -> dict[str, str]:
        return {"thing": thing}

    @app.post("/other")
    async def other() -> dict[str, str]:
        return {}

    return app


def test_405_names_every_method_of_the_path() -> None:
    response = TestClient(_app()).request("TRACE", "/things/a")
    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}
    assert response.headers["allow"] == "GET, PATCH"


def test_405_of_a_single_route_path() -> None:
    response = TestClient(_app()).request("DELETE", "/other")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_404_keeps_its_shape_and_has_no_allow_header() -> None:
    response = TestClient(_app()).get("/nowhere")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}
    assert "allow" not in response.headers


def test_an_unexpected_error_carries_the_headers_its_path_calls_for() -> None:
    # The 500 handler answers outside every middleware (Starlette's outermost layer), so
    # a page's security headers reach it only through install_error_handlers.
    app = FastAPI()
    install_error_handlers(app, headers_for_path=lambda path: {"X-Page": path})

    @app.get("/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError("a bug")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert response.json() == {"error": "Internal error; the server log has the details."}
    assert response.headers["x-page"] == "/boom"
