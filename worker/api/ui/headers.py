"""The security headers of the results pages, on every response under /ui.

Set by a middleware rather than by each route, so that the responses the routes do
not make carry them too: the router's 404 and 405, and the global error handlers'
answers. The outermost 500 handler answers outside every middleware: it takes its
headers from ``headers_for``.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/ui"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
"""On every /ui response. No referrer: a page address may carry ``?key=`` or a share
token, which must not leak to another site through a link."""


def under_ui(path: str) -> bool:
    """Whether ``path`` is /ui or below it (not /uix)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def headers_for(path: str) -> dict[str, str]:
    """The security headers a response on ``path`` carries (none outside /ui)."""
    return dict(SECURITY_HEADERS) if under_ui(path) else {}


class SecurityHeadersMiddleware:
    """ASGI middleware: sets ``SECURITY_HEADERS`` on every response under /ui."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not under_ui(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
