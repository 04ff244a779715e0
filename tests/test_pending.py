"""Pending work (tracker.ops.pending): entries read through the real consumer group and
not acknowledged, with owner, idle time, reads, attempts and the last error."""

from __future__ import annotations

import time
from typing import Any

import redis as sync_redis
from redis.asyncio import Redis

from tracker.ops.pending import LastError, list_pending
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys

LONG_OWNER = "tracker-7d9f8b6c5-x2x9q-a-kubernetes-pod-name-that-goes-on-and-on-0"


def stage(client: sync_redis.Redis, shard: int, conversation: str, due_ms: int) -> str:
    """A shard stream entry as the sweep script writes it."""
    k = ShardKeys.of(shard)
    if not client.exists(k.outbox):
        client.xgroup_create(k.outbox, CONSUMER_GROUP, id="0", mkstream=True)
    value = f"{conversation}|1|1|{due_ms - 1000}|{due_ms}|agent-1|m-1"
    return str(client.xadd(k.outbox, {"e": value}))


def read(client: sync_redis.Redis, shard: int, consumer: str) -> list[str]:
    reply: Any = client.xreadgroup(CONSUMER_GROUP, consumer, {ShardKeys.of(shard).outbox: ">"})
    return [entry_id for _, entries in reply for entry_id, _ in entries]


async def test_each_pending_entry_with_owner_reads_attempts_and_last_error(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    now = int(time.time() * 1000)
    failing = stage(redis_sync, 1, "conv-failing", now - 60_000)
    fresh = stage(redis_sync, 1, "conv-fresh", now - 10)
    held = stage(redis_sync, 2, "conv-held", now + 600_000)
    stage(redis_sync, 3, "conv-unread", now)  # not read: backlog, not pending
    assert read(redis_sync, 1, LONG_OWNER) == [failing, fresh]
    assert read(redis_sync, 2, "pod-b-1") == [held]
    k = ShardKeys.of(1)
    redis_sync.xclaim(k.outbox, CONSUMER_GROUP, LONG_OWNER, 0, [failing])  # read twice
    redis_sync.hset(k.attempts, failing, 3)
    error = "webhook: HTTP 503 <b>busy</b>|again"
    redis_sync.hset(k.attempts, f"{failing}:last", f"{now - 5000}|webhook|{error}")

    listing = await list_pending(redis, [0, 1, 2, 3], 10)
    assert listing.total == 3
    got = {p.id: p.to_json(now) for p in listing.items}
    failing, fresh, held = f"1-{failing}", f"1-{fresh}", f"2-{held}"
    assert set(got) == {failing, fresh, held}
    order = [tuple(int(x) for x in p.entry_id.split("-")) for p in listing.items]
    assert order == sorted(order)  # oldest first, whatever the shard
    assert got[failing]["conversation_id"] == "conv-failing"
    assert got[failing]["consumer"] == LONG_OWNER
    assert got[failing]["times_read"] == 2
    assert got[failing]["attempts"] == 3
    assert got[failing]["last_error"] == error
    assert got[failing]["last_error_sink"] == "webhook"
    assert got[failing]["state"] == "failing"
    assert got[failing]["idle_ms"] >= 0
    assert got[fresh]["state"] == "delivering"
    assert (got[fresh]["attempts"], got[fresh]["last_error"]) == (0, None)
    assert got[held]["state"] == "held"
    assert got[held]["consumer"] == "pod-b-1"


async def test_the_limit_keeps_the_oldest_and_the_total_counts_all(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    now = int(time.time() * 1000)
    ids = [stage(redis_sync, i % 2, f"conv-{i}", now) for i in range(6)]
    read(redis_sync, 0, "c-0")
    read(redis_sync, 1, "c-1")
    listing = await list_pending(redis, [0, 1], 2)
    assert listing.total == 6
    assert [p.entry_id for p in listing.items] == ids[:2]
    only_one = await list_pending(redis, [1], 100)
    assert {p.shard for p in only_one.items} == {1}


async def test_an_entry_trimmed_or_unparsable_is_still_listed(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    now = int(time.time() * 1000)
    gone = stage(redis_sync, 0, "conv-gone", now)
    k = ShardKeys.of(0)
    odd = str(redis_sync.xadd(k.outbox, {"x": "<script>"}))
    read(redis_sync, 0, "c-0")
    redis_sync.xdel(k.outbox, gone)
    redis_sync.hset(k.attempts, odd, "not-a-number")
    redis_sync.hset(k.attempts, f"{odd}:last", "no time here")
    states = {p.entry_id: p for p in (await list_pending(redis, [0], 10)).items}
    assert states[gone].state(now) == "gone"
    assert states[odd].state(now) == "malformed"
    assert states[odd].to_json(now)["fields"] == {"x": "<script>"}
    assert states[odd].attempts == 0
    assert states[odd].last_error == LastError(None, None, "no time here")


async def test_shards_without_a_stream_have_nothing_pending(redis: Redis) -> None:
    listing = await list_pending(redis, [0, 1, 2], 10)
    assert (listing.total, listing.items) == (0, [])
