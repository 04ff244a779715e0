"""Headless Chromium driven through the DevTools protocol, for the web console's tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
)


def chromium_path() -> str:
    """Debian's chromium (installed by .ci/run); a missing browser fails the test."""
    found = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if found is None:
        raise RuntimeError("chromium not found: apt-get install chromium (.ci/run installs it)")
    return found


class Page:
    """One page of the browser, over its DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = orjson.loads(message.data)
            future = self.waiting.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                if "error" in data:
                    future.set_exception(RuntimeError(f"devtools: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))

    async def send(self, method: str, **params: Any) -> Any:
        call = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[call] = future
        await self.ws.send_str(
            orjson.dumps({"id": call, "method": method, "params": params}).decode()
        )
        return await asyncio.wait_for(future, 30)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise)."""
        reply = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"javascript: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll an expression until it is truthy; its value. Raises when time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page: {expression!r} still false after {timeout}s")
            await asyncio.sleep(0.2)

    async def navigate(self, url: str) -> None:
        """Open `url` and wait until its document (and its deferred scripts) loaded."""
        await self.send("Page.navigate", url=url)
        await self.wait_for(
            f"location.href === {orjson.dumps(url).decode()} && document.readyState === 'complete'"
        )

    async def reload(self) -> None:
        """Load the page again and wait until the new document loaded."""
        await self.evaluate("window.__before_reload = true")
        await self.send("Page.reload")
        await self.wait_for("!window.__before_reload && document.readyState === 'complete'")

    async def screenshot(self, path: Path, width: int = 1600) -> None:
        """The whole page, `width` CSS pixels wide, as a PNG."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        height = await self.evaluate("document.documentElement.scrollHeight")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = await self.send("Page.captureScreenshot", format="png")
        _write(path, base64.b64decode(shot["data"]))

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        await self.ws.close()


@contextlib.asynccontextmanager
async def chromium(workdir: Path) -> AsyncIterator[Page]:
    """A fresh headless Chromium (its own profile in `workdir`) and its first page; stopped
    by its pid (and its helper processes, by its process group) afterwards."""
    proc, profile, log = _launch(workdir)
    session = aiohttp.ClientSession()
    page: Page | None = None
    try:
        port = await _devtools_port(profile, proc)
        async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        target = next(t for t in targets if t["type"] == "page")
        ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        yield page
    finally:
        if page is not None:
            await page.close()
        await session.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group this browser leads: its own helpers
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _launch(workdir: Path) -> tuple[subprocess.Popen[bytes], Path, IO[bytes]]:
    """Start the browser with a fresh profile, in a process group of its own."""
    workdir.mkdir(parents=True, exist_ok=True)
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=workdir))
    log = (workdir / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [chromium_path(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, profile, log


def _read_port(profile: Path) -> int | None:
    """The DevTools port the browser wrote into its profile, once it has."""
    with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
        return int((profile / "DevToolsActivePort").read_text().splitlines()[0])
    return None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _devtools_port(
    profile: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        port = _read_port(profile)
        if port is not None:
            return port
        await asyncio.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")
