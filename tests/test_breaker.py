"""The webhook circuit breaker: its states, and that a refusal costs no delivery attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiohttp import web
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.support.delivering import reader, sweep_once
from tests.support.receiver import SECRET
from tests.support.redis_server import RedisServer, free_port
from tracker.delivery.notification import Notification, Outgoing
from tracker.delivery.reader import StreamReader
from tracker.delivery.sinks import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breaker,
    CircuitOpen,
    Outcomes,
    WebhookSink,
)
from tracker.errors import DeliveryError
from tracker.model import AgentMessage
from tracker.redis.connection import redis_time_ms
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys
from tracker.state.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_failures_in_a_row_then_probes_once() -> None:
    clock = Clock()
    b = Breaker(3, 10.0, clock)
    b.failure()
    b.failure()
    b.success()  # a success resets the count
    b.failure()
    b.failure()
    assert b.state == CLOSED
    assert b.allow()
    b.failure()
    assert b.state == OPEN
    assert not b.allow()
    assert 1.1 <= b.retry_after_s() <= 2.0  # the rest of the first cool-down, plus a spread
    clock.now += 1.0
    assert b.allow()  # the probe
    assert b.state == HALF_OPEN
    assert not b.allow()  # only one probe at a time
    b.failure()
    assert b.state == OPEN  # the probe failed: another, longer cool-down
    clock.now += 1.0
    assert not b.allow()
    clock.now += 1.0
    assert b.allow()
    b.success()
    assert b.state == CLOSED
    assert b.allow()
    assert b.allow()


def test_the_cool_down_starts_near_a_second_and_grows_while_the_receiver_stays_down() -> None:
    """A 3 s blip costs about a second of waiting, not the whole configured cool-down; a
    receiver that stays down is probed every 1, 2, 4, 8, then 10 s (the configured cap)."""
    clock = Clock()
    b = Breaker(1, 10.0, clock)
    assert b.closed.is_set()
    b.failure()
    assert not b.closed.is_set()  # what it turns away waits on this
    waits = []
    for _ in range(6):
        opened = clock.now
        while not b.allow():
            clock.now += 0.25
        waits.append(clock.now - opened)
        b.failure()  # the probe fails
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    while not b.allow():
        clock.now += 0.25
    b.success()
    assert b.closed.is_set()  # everything waiting goes now
    b.failure()  # down again later: from the first cool-down
    opened = clock.now
    while not b.allow():
        clock.now += 0.25
    assert clock.now - opened == 1.0


def test_a_late_failure_does_not_extend_the_cool_down() -> None:
    clock = Clock()
    b = Breaker(1, 5.0, clock)
    b.failure()
    clock.now += 0.5
    b.failure()  # a request that was already in flight when it opened
    clock.now += 0.5
    assert b.allow()


class RefusingSink:
    """A sink whose breaker is open: every event is refused without being attempted."""

    name = "refusing"

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, batch: Sequence[Outgoing]) -> Outcomes:
        self.calls += 1
        return [CircuitOpen(60.0)] * len(batch)

    async def close(self) -> None:
        return None


class FailingSink(RefusingSink):
    name = "failing"

    async def send(self, batch: Sequence[Outgoing]) -> Outcomes:
        self.calls += 1
        return [DeliveryError("HTTP 500")] * len(batch)


async def fired_notification(
    redis: Redis, tmp_path: Path, url: str, conversation: str, **env: str
) -> StreamReader:
    settings = make_settings(
        url, tmp_path / "run", SHARD_COUNT="1", TIMEOUT_INTERVAL_MS="100", **env
    )
    since = await redis_time_ms(redis) - 200
    await Store(redis, settings).apply(AgentMessage(conversation, "agent", "m1", since))
    assert (await sweep_once(redis, settings)).fired == 1
    deliverer = await reader(redis, settings, [])
    return deliverer


async def test_a_refused_event_stays_pending_and_keeps_its_attempts(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    d = await fired_notification(redis, tmp_path, redis_server.url, "c1", MAX_DELIVERIES="1")
    d.pipeline.sinks = [
        RefusingSink(),
        FailingSink(),
    ]  # a real failure elsewhere outranks the refusal
    assert await d.read([0], block_ms=None) == 1
    k = ShardKeys.of(0)
    assert await redis.xlen(k.dead_letters) == 1  # MAX_DELIVERIES=1: one real attempt
    await d.close()

    d = await fired_notification(redis, tmp_path, redis_server.url, "c2", MAX_DELIVERIES="1")
    await redis.delete(k.dead_letters)
    d.pipeline.sinks = [RefusingSink(), RefusingSink()]
    assert await d.read([0], block_ms=None) == 1
    assert await redis.hlen(k.attempts) == 0
    assert await redis.xlen(k.dead_letters) == 0
    info = await redis.xpending(k.outbox, CONSUMER_GROUP)
    assert int(info["pending"]) == 1
    assert (
        len(d.pipeline.failures.retries) == 1
    )  # it comes back after the cool-down (capped by the retry cap)
    await d.close()


async def test_webhook_sink_stops_sending_while_open(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    hits = 0

    async def fail(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/hook", fail)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    settings = make_settings(
        redis_server.url,
        tmp_path / "run",
        NOTIFY_SINK="webhook",
        NOTIFY_WEBHOOK_URL=f"http://127.0.0.1:{port}/hook",
        NOTIFY_WEBHOOK_SECRET=SECRET,
        NOTIFY_WEBHOOK_BREAKER_FAILURES="2",
        NOTIFY_WEBHOOK_BREAKER_COOLDOWN_MS="200",
    )
    sink = WebhookSink(settings, concurrency=1)
    n = Notification("1-0", 0, "c1", 1, 1, "a", "m", 0, 100)
    try:
        outcomes = await sink.send([n.outgoing(200)] * 5)
        assert hits == 2
        assert [type(o) for o in outcomes[:2]] == [DeliveryError, DeliveryError]
        assert all(isinstance(o, CircuitOpen) for o in outcomes[2:])
        await asyncio.sleep(0.25)
        outcomes = await sink.send([n.outgoing(200)] * 3)
        assert hits == 3  # one probe, which failed: open again
        assert sink.breaker.state == OPEN
    finally:
        await sink.close()
        await runner.cleanup()


@pytest.mark.parametrize(
    ("name", "value"),
    [("NOTIFY_WEBHOOK_BREAKER_FAILURES", "0"), ("NOTIFY_WEBHOOK_BREAKER_COOLDOWN_MS", "x")],
)
def test_breaker_settings_are_validated(name: str, value: str, tmp_path: Path) -> None:
    from tracker.errors import ConfigError

    with pytest.raises(ConfigError, match=name):
        make_settings("redis://127.0.0.1:1/0", tmp_path, **{name: value})
