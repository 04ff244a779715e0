"""A local webhook endpoint that verifies Standard Webhooks signatures and records what the
tracker's processes deliver to it."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests.support.redis_server import free_port
from tests.support.reliability import Arrival

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


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
