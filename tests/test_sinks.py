"""The webhook sink against real local receivers: redirects, huge answers, signing time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from tests.conftest import make_settings
from tests.support.receiver import SECRET
from tests.support.redis_server import RedisServer, free_port
from tracker.delivery.notification import Notification
from tracker.delivery.sinks import MAX_RESPONSE_BYTES, WebhookSink
from tracker.errors import DeliveryError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def receiver(routes: dict[tuple[str, str], Handler]) -> AsyncIterator[str]:
    """A local HTTP server with the given (method, path) handlers; yields its base URL."""
    app = web.Application()
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def webhook(server: RedisServer, tmp_path: Path, url: str, concurrency: int = 64) -> WebhookSink:
    settings = make_settings(
        server.url,
        tmp_path / "run",
        NOTIFY_SINK="webhook",
        NOTIFY_WEBHOOK_URL=url,
        NOTIFY_WEBHOOK_SECRET=SECRET,
    )
    return WebhookSink(settings, concurrency=concurrency)


NOTIFICATION = Notification("1-0", 0, "c1", 1, 1, "a", "m", 0, 100)


async def test_a_redirect_is_a_failure_that_names_its_location_not_a_delivery(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """301 to /final: aiohttp would follow it as a GET without the body and the event would
    count as sent. Not followed: a failure (retried, then dead-lettered) naming where."""
    followed: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=int(request.query["status"]), headers={"Location": "/final"})

    async def final(request: web.Request) -> web.Response:
        followed.append(request.method)
        return web.Response(status=204)

    routes: dict[tuple[str, str], Handler] = {("POST", "/hook"): moved, ("*", "/final"): final}
    async with receiver(routes) as base:
        for status in (301, 302, 307, 308):
            sink = webhook(redis_server, tmp_path, f"{base}/hook?status={status}")
            try:
                (outcome,) = await sink.send([NOTIFICATION.outgoing(200)])
            finally:
                await sink.close()
            assert isinstance(outcome, DeliveryError)
            assert str(outcome) == f"webhook: HTTP {status} redirect to {base}/final"
            assert not outcome.permanent  # retried: the address may be fixed meanwhile
    assert followed == []


async def test_only_the_start_of_a_huge_answer_is_read(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A receiver answering 200 with a 150 MB body: the delivery counts (the status is what
    matters), the sink reads MAX_RESPONSE_BYTES and drops the connection."""
    written = 0

    async def huge(request: web.Request) -> web.StreamResponse:
        nonlocal written
        await request.read()
        resp = web.StreamResponse(status=200)
        resp.content_length = 150 * 1024 * 1024
        await resp.prepare(request)
        chunk = b"x" * (1024 * 1024)
        with contextlib.suppress(ConnectionError, RuntimeError):
            for _ in range(150):
                await resp.write(chunk)
                written += len(chunk)
        return resp

    async with receiver({("POST", "/hook"): huge}) as base:
        sink = webhook(redis_server, tmp_path, f"{base}/hook")
        try:
            started = time.monotonic()
            (outcome,) = await sink.send([NOTIFICATION.outgoing(200)])
            took = time.monotonic() - started
        finally:
            await sink.close()
        await asyncio.sleep(0.2)
    assert outcome is None
    assert MAX_RESPONSE_BYTES == 64 * 1024
    # what the server got into socket buffers before the sink hung up, far from 150 MB
    assert written < 40 * 1024 * 1024, (written, took)


async def test_the_signed_timestamp_is_taken_when_the_request_is_sent(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two events through one connection slot to a receiver taking 1.1 s each: the second
    is signed when it goes, not when it was queued behind the first."""
    stamps: list[tuple[int, float]] = []

    async def slow(request: web.Request) -> web.Response:
        stamps.append((int(request.headers["webhook-timestamp"]), time.time()))
        await request.read()
        await asyncio.sleep(1.1)
        return web.Response(status=204)

    async with receiver({("POST", "/hook"): slow}) as base:
        sink = webhook(redis_server, tmp_path, f"{base}/hook", concurrency=1)
        try:
            outcomes = await sink.send([NOTIFICATION.outgoing(200)] * 2)
        finally:
            await sink.close()
    assert outcomes == [None, None]
    (first, _), (second, arrived) = stamps
    assert second >= first + 1
    assert abs(second - arrived) < 1.0


async def test_no_answer_is_a_failure_that_says_why(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Nobody listening, and a receiver slower than NOTIFY_WEBHOOK_TIMEOUT_MS: each a
    DeliveryError naming curl's error (retried, counted by the breaker), not a hang."""

    async def stalls(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(status=204)

    closed = webhook(redis_server, tmp_path, f"http://127.0.0.1:{free_port()}/hook")
    try:
        (outcome,) = await closed.send([NOTIFICATION.outgoing(200)])
    finally:
        await closed.close()
    assert isinstance(outcome, DeliveryError)
    assert str(outcome).startswith("webhook: curl 7:")  # could not connect
    assert closed.breaker.failures == 1
    async with receiver({("POST", "/hook"): stalls}) as base:
        settings = make_settings(
            redis_server.url,
            tmp_path / "run",
            NOTIFY_SINK="webhook",
            NOTIFY_WEBHOOK_URL=f"{base}/hook",
            NOTIFY_WEBHOOK_SECRET=SECRET,
            NOTIFY_WEBHOOK_TIMEOUT_MS="300",
        )
        slow = WebhookSink(settings)
        try:
            started = time.monotonic()
            (outcome,) = await slow.send([NOTIFICATION.outgoing(200)])
            took = time.monotonic() - started
        finally:
            await slow.close()
    assert isinstance(outcome, DeliveryError)
    assert str(outcome).startswith("webhook: curl 28:")  # timed out
    assert took < 2.0
