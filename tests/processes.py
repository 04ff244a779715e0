"""Real tracker processes and a real webhook receiver, for end-to-end tests."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests.redis_server import free_port
from tests.reliability import Arrival

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Role:
    """One `python -m tracker ROLE` process, logging to a file, stopped by its pid."""

    def __init__(self, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.args = args
        self.log = log
        self.logfile = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracker", *args],
            env={**os.environ, **env},
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.logfile.close()
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_api(redis_url: str, workdir: Path, **env: str) -> Iterator[str]:
    """One `python -m tracker api` process on a free port, ready (its /health answers);
    yields its base URL, stops it by pid, and then checks its log held no traceback."""
    port = free_port()
    role = Role(
        ["api"], role_env(redis_url, workdir / "run", PORT=str(port), **env), workdir / "api.log"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_http(f"{base}/health"))
        yield base
    finally:
        role.stop()
    assert "Traceback" not in role.output(), role.output()[-3000:]


def role_env(redis_url: str, run_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url,
        "RUN_DIR": str(run_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics"),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


async def wait_http(url: str, timeout: float = 20.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as resp:
                    if resp.status == status:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {status} within {timeout}s")


@dataclass
class Received:
    event: dict[str, Any]
    received_ms: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Receiver:
    """A local webhook endpoint that verifies Standard Webhooks signatures and records events."""

    port: int = field(default_factory=free_port)
    secret: str = SECRET
    status: int = 200
    events: list[Received] = field(default_factory=list)
    bad_signatures: int = 0
    delay_s: float = 0.0
    runner: web.AppRunner | None = None
    loop: asyncio.AbstractEventLoop | None = None
    thread: threading.Thread | None = None
    #: every correctly signed request, answered or not, by webhook-id (delivery attempts)
    attempts: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        arrived_ms = int(time.time() * 1000)
        body = await request.read()
        headers = dict(request.headers)
        try:
            Webhook(self.secret).verify(body, headers)
        except Exception:
            self.bad_signatures += 1
            return web.Response(status=400)
        self.attempts[headers.get("webhook-id", "")] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status >= 300:
            return web.Response(status=self.status)
        self.events.append(Received(orjson.loads(body), arrived_ms, headers, body))
        return web.Response(status=204)

    async def start(self) -> None:
        """Serve from a thread with its own event loop, so that a test blocked in a
        synchronous wait (stopping a process) never keeps the receiver from answering."""
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        await asyncio.to_thread(ready.wait, 10)

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self.runner.setup())
        loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self.runner.cleanup())
        loop.close()

    async def stop(self) -> None:
        if self.loop is not None and self.thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            await asyncio.to_thread(self.thread.join, 10)

    def by_conversation(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for r in self.events:
            out.setdefault(r.event["conversation_id"], []).append(int(r.event["level"]))
        return out

    def arrivals(self) -> list[Arrival]:
        """Every notification received, with its period, due and arrival times."""
        from tracker.timefmt import parse_rfc3339_ms

        return [
            Arrival(
                r.event["conversation_id"],
                int(r.event["level"]),
                parse_rfc3339_ms(r.event["waiting_since"]),
                parse_rfc3339_ms(r.event["due_at"]),
                r.received_ms,
            )
            for r in self.events
        ]

    def lateness_ms(self) -> list[int]:
        from tracker.timefmt import parse_rfc3339_ms

        return sorted(r.received_ms - parse_rfc3339_ms(r.event["due_at"]) for r in self.events)


def percentile(values: list[int], q: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def post_events(base: str, items: list[dict[str, Any]], chunk: int = 500) -> list[Any]:
    results: list[Any] = []
    async with aiohttp.ClientSession() as session:
        for i in range(0, len(items), chunk):
            async with session.post(f"{base}/events", json=items[i : i + chunk]) as resp:
                assert resp.status == 200, await resp.text()
                results += (await resp.json())["results"]
    return results


async def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())


class Pod:
    """A whole pod: `tracker pod` (supervisord and every role) in its own RUN_DIR."""

    def __init__(self, name: str, redis_url: str, workdir: Path, **extra: str) -> None:
        self.name = name
        self.port = free_port()
        self.run_dir = workdir / name
        self.env = role_env(redis_url, self.run_dir, POD_ID=name, PORT=str(self.port), **extra)
        self.role = Role(["pod"], self.env, workdir / f"{name}.log")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tracker", "ctl", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout + done.stderr

    def pid_of(self, program: str) -> int:
        return int(self.ctl("pid", program).strip())

    async def metric_sum(self, name: str) -> float:
        async with aiohttp.ClientSession() as session, session.get(f"{self.base}/metrics") as resp:
            text = await resp.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#") and line[len(name)] in "{ "
        )

    def stop(self) -> int:
        return self.role.stop(timeout=60)
