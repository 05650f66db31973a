"""Closed-loop HTTP/1.1 load generator, and a trivial server to measure its ceiling.

    python bench/http_load.py load URL --connections 32 --seconds 10 [--header 'K: V']
    python bench/http_load.py serve --port P --body-bytes N

``load`` keeps ``--connections`` keep-alive connections busy back to back for
``--seconds`` and prints one JSON object: the latency (ms) of every 200 answer, the
error counts by reason, and the elapsed time. It speaks raw HTTP/1.1 over asyncio
protocols (uvloop when installed) because a general client such as httpx spends more
CPU per request than the API under test does once results are cached, and would
measure itself.

``serve`` answers every request with a fixed 200 of ``--body-bytes`` bytes: the
ceiling of the load generator on this machine, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

try:  # uvloop halves the client's CPU per request; plain asyncio still works.
    import uvloop
except ImportError:  # pragma: no cover - depends on the environment
    uvloop = None


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends and waits for one response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        status = self._complete_status()
        if status is not None and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(status)

    def _complete_status(self) -> int | None:
        """The status once a whole Content-Length response is buffered (then dropped)."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self._buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self._buffer) < end + 4 + length:
            return None
        del self._buffer[: end + 4 + length]
        return int(lines[0].split(" ", 2)[1])

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self._waiter


async def _open(host: str, port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Connection, host, port)
    return protocol


async def run_load(
    url: str, headers: list[str], connections: int, seconds: float, timeout: float
) -> dict[str, object]:
    """Latencies of 200s and error counts of ``connections`` closed loops for ``seconds``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", *headers]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    started = time.perf_counter()
    deadline = started + seconds

    async def loop_one() -> None:
        connection: _Connection | None = None
        while time.perf_counter() < deadline:
            begun = time.perf_counter()
            try:
                if connection is None:
                    connection = await asyncio.wait_for(_open(host, port), timeout)
                status = await asyncio.wait_for(connection.request(raw), timeout)
            except (TimeoutError, OSError) as error:
                # A late answer would desynchronise the connection: open a new one.
                errors["timeout" if isinstance(error, TimeoutError) else "connection"] += 1
                if connection is not None and connection.transport is not None:
                    connection.transport.close()
                connection = None
                continue
            if status == 200:
                latencies.append((time.perf_counter() - begun) * 1000)
            else:
                errors[f"status {status}"] += 1
        if connection is not None and connection.transport is not None:
            connection.transport.close()

    await asyncio.gather(*(loop_one() for _ in range(connections)))
    return {
        "latencies_ms": latencies,
        "errors": dict(errors),
        "elapsed_s": time.perf_counter() - started,
    }


class _CannedServer(asyncio.Protocol):
    """Answers each request (a GET without body) with the same fixed response."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        requests = self._buffer.count(b"\r\n\r\n")
        if requests and self._transport is not None:
            self._buffer = self._buffer[self._buffer.rfind(b"\r\n\r\n") + 4 :]
            self._transport.write(self._response * requests)


async def serve(port: int, body_bytes: int) -> None:
    """Serve the canned response on 127.0.0.1:``port`` until killed."""
    body = b"x" * body_bytes
    response = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _CannedServer(response), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load", help="drive URL and print the figures as JSON")
    load.add_argument("url")
    load.add_argument("--connections", type=int, default=32)
    load.add_argument("--seconds", type=float, default=10)
    load.add_argument("--timeout", type=float, default=30, help="seconds per request")
    load.add_argument("--header", action="append", default=[], help="'Name: value'")
    load.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    server = commands.add_parser("serve", help="the trivial server of the ceiling run")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--body-bytes", type=int, default=1000)
    args = parser.parse_args()
    run = uvloop.run if uvloop is not None else asyncio.run
    if args.command == "load":
        figures = run(run_load(args.url, args.header, args.connections, args.seconds, args.timeout))
        if args.out is None:
            print(json.dumps(figures))
        else:
            args.out.write_text(json.dumps(figures))
    else:
        run(serve(args.port, args.body_bytes))


if __name__ == "__main__":
    main()
