"""Headless Chromium for the page tests: installed from Debian's `chromium` package when
missing (a missing browser fails the test, never skips it). Its command line renders
a page (``dump_dom``, ``screenshot``); ``Page`` drives a tab over the DevTools
protocol, to click and wait for what the page script does."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

INSTALL_SECONDS = 600
RUN_SECONDS = 60
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
WINDOW = (1280, 1600)
"""Width and height of the window, in CSS pixels, unless a call sets its own."""


def chromium() -> str:
    """The chromium executable, installed with apt-get if needed; RuntimeError if it
    cannot be."""
    found = shutil.which("chromium")
    if found:
        return found
    install = ["apt-get", "install", "-y", "chromium"]
    for commands in ([install], [["apt-get", "update"], install]):
        for command in commands:
            subprocess.run(command, capture_output=True, timeout=INSTALL_SECONDS, check=False)
        found = shutil.which("chromium")
        if found:
            return found
    raise RuntimeError("chromium is not installed and `apt-get install -y chromium` failed.")


def _run(profile: Path, *arguments: str, window: tuple[int, int] = WINDOW) -> str:
    size = f"--window-size={window[0]},{window[1]}"
    completed = subprocess.run(
        [chromium(), *FLAGS, size, f"--user-data-dir={profile}", *arguments],
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"chromium failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return completed.stdout


def dump_dom(url: str, profile: Path) -> str:
    """The DOM of ``url`` after Chromium rendered it, as HTML text."""
    return _run(profile, "--dump-dom", url)


def screenshot(url: str, path: Path, profile: Path, window: tuple[int, int] = WINDOW) -> None:
    """Save a PNG of ``url`` as Chromium renders it in a window of ``window`` (width,
    height) CSS pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(profile, f"--screenshot={path}", url, window=window)
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot to {path}.")


class Page:
    """One Chromium tab driven over the DevTools protocol (aiohttp's websocket client):
    for the page script's behaviour, which ``--dump-dom`` cannot exercise.

    ``async with Page(profile) as page:`` starts a headless Chromium and ends it."""

    def __init__(self, profile: Path, window: tuple[int, int] = WINDOW) -> None:
        self._profile = profile
        self._window = window
        self._process: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.answers: dict[str, tuple[int, dict[str, str]]] = {}
        """Address part → (status, headers) to answer requests with, while set (after
        ``send("Fetch.enable")``): a request whose address contains the part is
        answered so, the others go on."""

    async def __aenter__(self) -> Page:
        self._profile.mkdir(parents=True, exist_ok=True)
        port_file = self._profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        size = f"--window-size={self._window[0]},{self._window[1]}"
        self._process = subprocess.Popen(
            [
                chromium(),
                *FLAGS,
                size,
                f"--user-data-dir={self._profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + RUN_SECONDS
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port.")
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self._socket = await self._session.ws_connect(url, max_msg_size=0)
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._session is not None:
            await self._session.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a DevTools method; its result (events that arrive meanwhile are kept in
        ``events``)."""
        assert self._socket is not None
        call = next(self._ids)
        await self._socket.send_json({"id": call, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self._socket.receive_json(), RUN_SECONDS)
            if message.get("id") == call:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if message.get("method") == "Fetch.requestPaused":
                await self._answer(message["params"])
            else:
                self.events.append(message)

    async def _answer(self, paused: dict[str, Any]) -> None:
        """Answer a paused request from ``answers``, or let it go on (without waiting
        for the acknowledgement, which ``send`` then skips)."""
        assert self._socket is not None
        url = paused["request"]["url"]
        answer = next((a for part, a in self.answers.items() if part in url), None)
        if answer is None:
            method, params = "Fetch.continueRequest", {"requestId": paused["requestId"]}
        else:
            status, headers = answer
            method = "Fetch.fulfillRequest"
            params = {
                "requestId": paused["requestId"],
                "responseCode": status,
                "responseHeaders": [{"name": k, "value": v} for k, v in headers.items()],
                "body": "",
            }
        await self._socket.send_json({"id": next(self._ids), "method": method, "params": params})

    async def goto(self, url: str) -> None:
        """Open ``url`` and wait until it has loaded."""
        self.events.clear()
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && !!document.body")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """The first truthy value of ``expression``, polled; TimeoutError after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true: {expression}")
            await asyncio.sleep(0.2)
