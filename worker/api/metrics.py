"""Request metrics in the Prometheus text exposition format (written here: no client
library is needed for two metric families).

Requests are labelled by route template (``/v2/project/{project_key}/...``), never by
raw path, so label cardinality stays bounded whatever clients send.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Other methods are counted as ``OTHER``: clients choose the method string."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        for index, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.buckets[index] += 1
        self.total += seconds
        self.count += 1


class RequestMetrics:
    """Counts and latencies of requests, per method, route and status."""

    def __init__(self) -> None:
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._latency: defaultdict[tuple[str, str], _Histogram] = defaultdict(_Histogram)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self._requests[method, route, status] += 1
        self._latency[method, route].observe(seconds)

    def render(self) -> str:
        """The exposition text of every metric."""
        lines = [
            "# HELP ab_api_requests_total HTTP requests served, by method, route and status.",
            "# TYPE ab_api_requests_total counter",
        ]
        for (method, route, status), count in sorted(self._requests.items()):
            lines.append(
                f"ab_api_requests_total{_labels(method=method, route=route, status=str(status))} {count}"
            )
        lines += [
            "# HELP ab_api_request_duration_seconds Time to serve a request, by method and route.",
            "# TYPE ab_api_request_duration_seconds histogram",
        ]
        for (method, route), histogram in sorted(self._latency.items()):
            name = "ab_api_request_duration_seconds"
            for bound, count in zip(BUCKETS, histogram.buckets, strict=True):
                labels = _labels(method=method, route=route, le=repr(bound))
                lines.append(f"{name}_bucket{labels} {count}")
            labels = _labels(method=method, route=route, le="+Inf")
            lines.append(f"{name}_bucket{labels} {histogram.count}")
            lines.append(f"{name}_sum{_labels(method=method, route=route)} {histogram.total}")
            lines.append(f"{name}_count{_labels(method=method, route=route)} {histogram.count}")
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """ASGI middleware that records every HTTP request in :class:`RequestMetrics`."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before responding

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            # The router stores the matched route in the scope; its template is the label.
            route = getattr(scope.get("route"), "path", UNMATCHED)
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            self.metrics.observe(method, route, status, time.perf_counter() - started)


def _labels(**labels: str) -> str:
    body = ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
