"""Guarantees 1 and 6 against broken delivery: a consumer killed between read and
acknowledge, a webhook that fails for a while (circuit breaker), one that always fails."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as sync_redis

from tests.support import reliability
from tests.support.faults import (
    FAST,
    SPACED,
    agent,
    every_level,
    now_ms,
    pending_of,
    settled,
    where_are,
)
from tests.support.processes import post_events, running
from tests.support.receiver import Receiver
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_http, wait_until
from tracker.delivery.notification import event_id
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys

pytestmark = pytest.mark.slow

SHARDS = int(FAST["SHARD_COUNT"])
ALL_SHARDS = list(range(SHARDS))


async def metric(base: str, name: str) -> float:
    """Sum of one metric's samples on a /metrics page."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in "{ "
    )


def dead_letters(client: sync_redis.Redis) -> list[dict[str, Any]]:
    out = []
    for shard in ALL_SHARDS:
        entries: Any = client.xrange(ShardKeys.of(shard).dead_letters)
        out += [fields for _, fields in entries]
    return out


def pending_total(client: sync_redis.Redis) -> int:
    total = 0
    for shard in ALL_SHARDS:
        stream = ShardKeys.of(shard).outbox
        if client.exists(stream):
            info: Any = client.xpending(stream, CONSUMER_GROUP)
            total += int(info["pending"])
    return total


#: What every test here starts from: one API, sweeper and consumer process each, phase 2.
STACK = {**FAST, "MODE": "phase2", "CONSUMER_PROCESSES": "1"}


async def test_no_lost_timeout_when_a_consumer_is_killed_between_read_and_ack(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    """Two consumers (two pods) share the shards; kill -9 one of them holding more entries
    than it sends at once: the other claims them after DELIVERY_TIMEOUT_MS. Each arrives,
    once or twice, and both copies carry one event_id."""
    receiver = Receiver(delay_s=1.0)  # slow until the kill: the victim has entries in hand
    settings = {**STACK, **SPACED}
    roles = ["api", "sweeper"]
    async with running(
        redis_server.url, tmp_path, roles, receiver=receiver, ready=None, env=settings
    ) as stack:
        consumers = {"pod-a-0": stack.start("consumer", "pod-a")}
        consumers["pod-b-0"] = stack.start("consumer", "pod-b")  # another pod's
        await wait_http(f"{stack.base}/ready")
        ids = [f"k3-{i}" for i in range(300)]
        start = now_ms()
        await post_events(stack.base, [agent(c, start - 500 + i) for i, c in enumerate(ids)])

        def in_hand() -> dict[str, int]:
            return {name: pending_of(redis_sync, name, ALL_SHARDS) for name in consumers}

        # Whichever consumer read the level-1 burst: kill it holding more entries than it
        # sends at once (64), so some were read and never sent.
        await wait_until(lambda: max(in_hand().values()) > 80, 15, 0.005)
        held = in_hand()
        victim = max(held, key=lambda name: held[name])
        consumers[victim].kill()
        receiver.delay_s = 0.0
        assert now_ms() - start < 4000, "the kill came after level 2 was due"
        expected = every_level(ids)
        await wait_until(
            lambda: set(pairs(receiver)) >= expected,
            timeout=30,
            what=lambda: where_are(redis_sync, expected - set(pairs(receiver)), SHARDS),
        )
        # every entry acknowledged (the victim's claimed): any duplicate has arrived by now
        await wait_until(lambda: settled(redis_sync), timeout=15)
        row = reliability.tally(
            "kill -9 consumer between read and ack",
            len(ids),
            expected,
            pairs(receiver),
            receiver.lateness_ms(),
            arrivals=receiver.arrivals(),
        )
        lost = expected - set(pairs(receiver))
        assert not lost, where_are(redis_sync, lost, SHARDS)
        assert row.unexpected == 0
        assert row.duplicates <= held[victim]
        ids_of = collections.defaultdict(set)
        for r in receiver.events:
            ids_of[(r.event["conversation_id"], r.event["level"])].add(r.event["event_id"])
        assert all(len(v) == 1 for v in ids_of.values()), "a duplicate with another event_id"
        assert pending_of(redis_sync, victim, ALL_SHARDS) == 0  # all claimed away
        print(f"\nin hand at the kill: {held[victim]}, duplicates: {row.duplicates}")


def pairs(receiver: Receiver) -> list[tuple[str, int]]:
    return [(r.event["conversation_id"], r.event["level"]) for r in receiver.events]


ROLES = ("api", "sweeper", "consumer")
BREAKER = {
    "TIMEOUT_INTERVAL_MS": "500",
    "NOTIFY_WEBHOOK_TIMEOUT_MS": "300",
    "RETRY_BASE_MS": "200",
    "NOTIFY_WEBHOOK_BREAKER_FAILURES": "5",
}


async def test_no_lost_timeout_when_the_webhook_fails_for_a_while(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    """The webhook answers 500 for 2.5 s, then times out for 2.5 s, then recovers; 100
    level-1 deadlines fall due meanwhile. The
    breaker opens (its metric shows it) and stops sending: far fewer requests than entries
    reach the webhook meanwhile, no entry spends its MAX_DELIVERIES, nothing is
    dead-lettered, and once it recovers every notification arrives."""
    receiver = Receiver(status=500)
    settings = {
        **STACK,
        **BREAKER,
        "MAX_DELIVERIES": "4",
        "LEVEL_MULTIPLIERS": "1,14,16",
        "NOTIFY_WEBHOOK_BREAKER_COOLDOWN_MS": "1000",
    }
    async with running(redis_server.url, tmp_path, ROLES, receiver=receiver, env=settings) as stack:
        # Level 1 falls due all through the outage; levels 2 and 3 after it.
        ids = [f"k4-{i}" for i in range(100)]
        start = now_ms()
        await post_events(stack.base, [agent(c, start + 40 * i) for i, c in enumerate(ids)])
        outage_end = time.monotonic() + 5.0
        states: set[float] = set()
        while time.monotonic() < outage_end:
            if time.monotonic() > outage_end - 2.5:
                receiver.delay_s = 1.0  # past NOTIFY_WEBHOOK_TIMEOUT_MS: the sink times out
            states.add(await metric(stack.base, "timeout_webhook_breaker_state"))
            await asyncio.sleep(0.1)
        requests_in_outage = sum(receiver.attempts.values())
        assert pending_total(redis_sync) > 0  # held back, not dead-lettered
        receiver.status, receiver.delay_s = 200, 0.0
        expected = every_level(ids)
        await wait_until(lambda: set(pairs(receiver)) >= expected, timeout=20)
        await wait_until(lambda: settled(redis_sync), timeout=10)  # every entry acknowledged
        row = reliability.tally(
            "webhook 500 then timeouts for 5 s (breaker)",
            len(ids),
            expected,
            pairs(receiver),
            receiver.lateness_ms(),
            arrivals=receiver.arrivals(),
        )
        assert row.lost == 0
        assert row.unexpected == 0
        assert dead_letters(redis_sync) == []
        assert pending_total(redis_sync) == 0
        # no entry spent its MAX_DELIVERIES (4): at most 3 failed attempts, then the success
        assert max(receiver.attempts.values()) <= 4
        assert 2.0 in states, f"the breaker never showed open: {states}"
        assert await metric(stack.base, "timeout_webhook_breaker_opened_total") >= 1
        assert await metric(stack.base, "timeout_webhook_breaker_state") == 0
        # Without the breaker each of the 100 level-1 entries would have been tried, most of
        # them several times; with it, the first failures and one probe per cool-down.
        assert requests_in_outage < 30, requests_in_outage
        print(f"\nrequests during the 5 s outage: {requests_in_outage} for {len(expected)} entries")


async def test_an_always_failing_webhook_dead_letters_after_max_deliveries(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    """With the breaker on, each entry still gets exactly MAX_DELIVERIES real attempts (the
    probes), then lands in the dead-letter stream, and the pending list empties."""
    receiver = Receiver(status=500)
    settings = {
        **STACK,
        **BREAKER,
        "MAX_DELIVERIES": "2",
        "NOTIFY_WEBHOOK_BREAKER_COOLDOWN_MS": "100",
    }
    async with running(redis_server.url, tmp_path, ROLES, receiver=receiver, env=settings) as stack:
        ids = [f"k4b-{i}" for i in range(8)]
        await post_events(stack.base, [agent(c) for c in ids])
        entries = 3 * len(ids)
        # Level 3 is never superseded; a lower level still failing when the next one is due
        # is superseded by it (guarantee 7) instead of dead-lettered.
        superseded = 'timeout_notifications_suppressed_total{reason="superseded"}'

        async def settled() -> bool:
            handled = len(dead_letters(redis_sync)) + await metric(stack.base, superseded)
            return handled == entries and pending_total(redis_sync) == 0

        def state() -> str:
            return (
                f"{len(dead_letters(redis_sync))} dead letters, {pending_total(redis_sync)} pending"
            )

        await wait_until(settled, timeout=40, interval=0.2, what=state)
        letters = dead_letters(redis_sync)
        assert all(d["reason"].startswith("max_deliveries") for d in letters)
        assert all(d["attempts"] == "2" for d in letters)
        assert {(d["c"], d["l"]) for d in letters} >= {(c, "3") for c in ids}
        for d in letters:  # exactly its two real attempts
            assert receiver.attempts[event_id(d["c"], int(d["s"]), int(d["l"]))] == 2
        assert max(receiver.attempts.values()) == 2, receiver.attempts
        assert receiver.events == []
