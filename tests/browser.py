"""A real headless Chromium for the tests that check pages as a person sees them (the report, the MLflow UI).

Driven over the Chrome DevTools Protocol with aiohttp's websocket client: open a URL, wait for it to load, evaluate
JavaScript in it, take a screenshot. Debian's `chromium` package (make test installs it where it can); without it,
those tests skip and say why.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",  # these machines: no
         "--disable-background-networking", "--disable-component-update", "--disable-sync",  # network beyond here
         "--window-size=1280,1000", "--hide-scrollbars"]


def chromium() -> str | None:
    """The Chromium executable, or None."""
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Page:
    """One Chromium tab: `Page.visit(url, check, screenshot=...)` is the usual way in."""

    def __init__(self, ws):
        self.ws, self.ids, self.events = ws, itertools.count(1), []

    async def send(self, method: str, **params) -> dict:
        call = next(self.ids)
        await self.ws.send_json({"id": call, "method": method, "params": params})
        while True:
            message = json.loads((await self.ws.receive()).data)
            if message.get("id") == call:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    async def wait_for(self, expression: str, *, timeout: float) -> object:
        """Evaluate `expression` (JavaScript) until it is truthy; its value (JSON-able), or the last falsy one."""
        end = time.monotonic() + timeout
        while True:
            result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
            value = result.get("result", {}).get("value")
            if value or time.monotonic() > end:
                return value
            await asyncio.sleep(0.5)

    async def screenshot(self, path: Path) -> Path:
        """The whole page, not only the window, as a PNG."""
        size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                               clip={"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 12000),
                                     "scale": 1})
        Path(path).write_bytes(base64.b64decode(shot["data"]))
        return Path(path)

    @staticmethod
    def visit(url: str, expression: str, *, timeout: float = 60, screenshot: Path | None = None) -> object:
        """Open `url` in a fresh headless Chromium, wait until `expression` is truthy, return its value."""
        return asyncio.run(_visit(url, expression, timeout, screenshot))


async def _visit(url: str, expression: str, timeout: float, screenshot: Path | None) -> object:
    import aiohttp

    port = _free_port()
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}",
                                    f"--remote-debugging-port={port}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            targets = _targets(port, deadline=time.monotonic() + 30)
            socket_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with aiohttp.ClientSession() as session, session.ws_connect(socket_url, max_msg_size=0) as ws:
                page = Page(ws)
                await page.send("Page.enable")
                await page.send("Page.navigate", url=url)
                value = await page.wait_for(expression, timeout=timeout)
                if screenshot is not None:
                    await page.screenshot(screenshot)
                return value
        finally:
            browser.terminate()
            browser.wait(timeout=30)


def _targets(port: int, *, deadline: float) -> list[dict]:
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as answer:
                return json.loads(answer.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
