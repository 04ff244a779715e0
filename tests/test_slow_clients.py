"""Slow and idle clients (issue 13.10): a connection that sends nothing, partial headers,
a trickle of header bytes, or nothing more after a keep-alive answer is closed after
HTTP_IDLE_TIMEOUT_MS; a body that stalls gets 408 after HTTP_BODY_TIMEOUT_MS; and 1,000
idle connections neither stop other clients nor make the API's memory grow round after
round."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.support.processes import running
from tests.support.rawhttp import GOOD, Api, api_settings, exchange, http, read_reply, start_api
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tracker.settings import Settings

IDLE_MS = 1000


@pytest.fixture
async def api(redis_server: RedisServer, redis: Redis, tmp_path: Path) -> AsyncIterator[Api]:
    settings = api_settings(redis_server.url, tmp_path / "run", HTTP_IDLE_TIMEOUT_MS=str(IDLE_MS))
    served, runner = await start_api(settings, redis)
    yield served
    await runner.cleanup()


async def closed_after(reader: asyncio.StreamReader, within_s: float) -> float:
    """Seconds until the server closed the connection (reading what it sends meanwhile);
    fails if it is still open after `within_s`."""
    started = time.monotonic()
    async with asyncio.timeout(within_s):
        while await reader.read(65536):
            pass
    return time.monotonic() - started


def test_the_defaults_are_bounded_and_near_a_reverse_proxys() -> None:
    """Idle connections close after 75 s (above the 60 s idle timeout of nginx and AWS load
    balancers, so the proxy closes first), bodies get 30 s: aiohttp's own keep-alive is
    3630 s, with no body timeout at all."""
    defaults = Settings.from_env({})
    assert defaults.http_idle_timeout_ms == 75_000
    assert defaults.http_body_timeout_ms == 30_000


async def test_idle_and_half_sent_connections_are_closed_after_the_idle_timeout(api: Api) -> None:
    async def nothing() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        try:
            return await closed_after(reader, IDLE_MS / 1000 + 10)
        finally:
            writer.close()

    async def partial_headers() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: tracker.test\r\nX-Slow:")
            return await closed_after(reader, IDLE_MS / 1000 + 10)
        finally:
            writer.close()

    async def trickle() -> float:
        """A slowloris: a header byte every 100 ms never completes the request."""
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: tracker.test\r\nX-Slow: ")

        async def drip() -> None:
            while not writer.is_closing():
                writer.write(b"a")
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(drip())
        try:
            return await closed_after(reader, IDLE_MS / 1000 + 10)
        finally:
            dripping.cancel()
            writer.close()

    async def after_an_answer() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        try:
            writer.write(http("GET", "/health", content_type=None))
            assert (await read_reply(reader)).status == 200
            return await closed_after(reader, IDLE_MS / 1000 + 10)
        finally:
            writer.close()

    times = await asyncio.gather(nothing(), partial_headers(), trickle(), after_an_answer())
    for seconds in times:
        assert seconds >= IDLE_MS / 1000 * 0.9  # not before its time either


async def test_a_stalled_body_is_cut_off_with_408_and_the_connection_closed(api: Api) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    try:
        started = time.monotonic()
        writer.write(http(body=GOOD[:10], length=len(GOOD)))
        reply = await asyncio.wait_for(read_reply(reader), 10)
        assert (reply.status, reply.json()["error"]["code"]) == (408, "body_timeout")
        assert reply.headers["connection"] == "close"
        assert time.monotonic() - started >= 0.45  # HTTP_BODY_TIMEOUT_MS=500 in these tests
        await closed_after(reader, 15)  # after aiohttp's lingering read (at most 10 s)
    finally:
        writer.close()
    assert (await exchange(api.port, http(body=GOOD))).status == 200  # others carry on


# --- 1,000 idle connections against a real API process --------------------------------------


def rss_kib(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def idle_connections(port: int, count: int) -> list[Connection]:
    """`count` connections, a third each: silent, partial headers, idle after an answer."""

    async def one(kind: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if kind == 1:
            writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        elif kind == 2:
            writer.write(http("GET", "/health", content_type=None))
            assert (await read_reply(reader)).status == 200
        return reader, writer

    connections = []
    for start in range(0, count, 100):  # in waves: the listen backlog is finite
        connections += await asyncio.gather(*(one(i % 3) for i in range(start, start + 100)))
    return connections


async def busy_client(base: str, requests: int) -> float:
    """The slowest of `requests` sequential requests by an ordinary client, in seconds."""
    slowest = 0.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for i in range(requests):
            started = time.monotonic()
            async with session.post(
                f"{base}/conversations/busy-{i}/agent-message",
                json={"agent_id": "a", "message_id": "m"},
            ) as resp:
                assert resp.status == 200
            slowest = max(slowest, time.monotonic() - started)
    return slowest


@pytest.mark.slow
async def test_1000_idle_connections_neither_stop_other_clients_nor_grow_memory(
    redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> None:
    idle_s = 3
    env = {"POD_ID": "idle", "HTTP_IDLE_TIMEOUT_MS": str(idle_s * 1000)}
    async with running(redis_server.url, tmp_path, ["api"], ready="/health", env=env) as stack:
        (api,) = stack.roles
        await busy_client(stack.base, 50)  # warm: the first requests allocate for good
        rss = [rss_kib(api.pid)]
        fds = open_fds(api.pid)
        slowest = 0.0
        for _ in range(2):
            connections = await idle_connections(stack.port, 1000)
            try:
                # the API holds every one (the warm-up's connection may have closed since)
                await wait_until(
                    lambda: open_fds(api.pid) >= fds + 999,
                    timeout=20,
                    what=lambda: f"{open_fds(api.pid)} fds open, not {fds} + 999",
                )
                slowest = await busy_client(stack.base, 100)
                assert slowest < 2.0, slowest
                rss.append(rss_kib(api.pid))
                # every one closed by the server
                await asyncio.gather(*(closed_after(r, idle_s + 20) for r, _ in connections))
            finally:
                for _, writer in connections:
                    writer.close()
            await wait_until(lambda: open_fds(api.pid) <= fds + 5, timeout=10)
        print(
            f"\nAPI RSS before, with 1000 idle connections, and with 1000 more after those"
            f" closed: {rss} KiB; slowest other request {slowest * 1000:.1f} ms"
        )
        assert rss[1] - rss[0] < 64 * 1024  # under 64 KiB a connection
        assert rss[2] - rss[1] < 8 * 1024  # and no growth from one round to the next
