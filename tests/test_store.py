"""The Store: a batch's events applied in request order, whatever the script cache holds."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.support.redis_server import RedisServer
from tracker.model import AgentMessage, CustomerResponse, Event
from tracker.redis.connection import connect
from tracker.redis.keys import LAYOUT, ShardKeys
from tracker.redis.lane import lane_for
from tracker.state.store import CALL_SIZE, Store


@contextlib.asynccontextmanager
async def store_on(server: RedisServer, tmp_path: Path, *, lane: bool) -> AsyncIterator[Store]:
    """A Store as the API runs it (through a lane), or as the CLI and tests do (pipelines)."""
    settings = make_settings(server.url, tmp_path / "run", TIMEOUT_INTERVAL_MS="60000")
    client = connect(settings)
    the_lane = lane_for(client) if lane else None
    try:
        yield Store(client, settings, lane=the_lane)
    finally:
        if the_lane is not None:
            await the_lane.aclose()
        await client.aclose()


def alternating(conversation: str, n: int) -> list[Event]:
    """Agent message, answer, agent message, ... of one conversation, 1 ms apart."""
    base = 1_790_000_000_000
    return [
        AgentMessage(conversation, "agent", f"m{i}", base + i)
        if i % 2 == 0
        else CustomerResponse(conversation, "customer", f"r{i}", base + i)
        for i in range(n)
    ]


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "pipeline"])
@pytest.mark.parametrize("events", [2, 1000, CALL_SIZE * 2 + 100])
async def test_a_flushed_script_cache_keeps_the_order_of_a_batch(
    redis_server: RedisServer, redis: Redis, tmp_path: Path, lane: bool, events: int
) -> None:
    """The issue's repro: after SCRIPT FLUSH, a batch that alternates agent messages and
    answers of one conversation gives started, answered, started, ... and ends answered,
    as it does with the script cached (beyond CALL_SIZE events a shard, in calls one after
    the other). Before, the calls that met NOSCRIPT ran again after the others."""
    async with store_on(redis_server, tmp_path, lane=lane) as store:
        await store.apply(CustomerResponse("warm", "u", "r", 0))  # the script is cached
        await redis.script_flush()
        results = await store.apply_many(alternating("c1", events))
        assert [r.status for r in results] == ["started", "answered"] * (events // 2)
        assert [r.generation for r in results] == [i // 2 + 1 for i in range(events)]
        conversation = await store.get("c1")
        assert conversation is not None
        assert conversation.state == "answered"
        assert conversation.generation == events // 2
        k = ShardKeys.of((await store.layout.get()).shard("c1"))
        assert await redis.zscore(k.waiting, "c1") is None


async def test_a_batch_over_many_conversations_keeps_each_ones_order_after_a_flush(
    redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> None:
    """200 conversations, five events each, interleaved: every conversation's events apply
    in order, in one round trip a shard."""
    async with store_on(redis_server, tmp_path, lane=True) as store:
        await redis.script_flush()
        per = {f"c{n}": alternating(f"c{n}", 5) for n in range(200)}
        batch = [events[i] for i in range(5) for events in per.values()]
        results = await store.apply_many(batch)
        for n in range(200):
            mine = [
                r.status
                for e, r in zip(batch, results, strict=True)
                if e.conversation_id == f"c{n}"
            ]
            assert mine == ["started", "answered", "started", "answered", "started"]


async def test_writers_converge_after_redis_loses_a_resharded_layout(
    redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> None:
    """The issue's repro: a layout at epoch 1 (a reshard to 5 shards), then FLUSHDB while
    writers that loaded it keep writing. The layout is seeded again at epoch 0 while those
    writers raise their shards to epoch 1; a writer that loads the new layout is refused by
    those shards, raises the layout above them and fences every shard, and the old writers,
    refused in turn, follow it. Every write succeeds; before, 5 of 16 shards refused every
    write of the new layout for good."""
    await redis.hset(LAYOUT, mapping={"count": 5, "epoch": 1})
    async with (
        store_on(redis_server, tmp_path / "a", lane=True) as old,
        store_on(redis_server, tmp_path / "b", lane=True) as new,
    ):
        assert (await old.layout.get()).epoch == 1
        await redis.flushdb()  # Redis loses its data (or restarts without persistence)
        for n in range(50):
            result = await old.apply(AgentMessage(f"old-{n}", "a", "m", 0))
            assert result.status == "started"
        raised = {s for s in range(5) if await redis.get(ShardKeys.of(s).epoch) == "1"}
        assert raised  # the old writer raised shards above the seeded layout
        for n in range(200):
            result = await new.apply(AgentMessage(f"new-{n}", "a", "m", 0))
            assert result.status == "started"
        layout = await new.layout.get()
        assert layout.epoch == 2
        assert layout.count == 16  # SHARD_COUNT seeded it again
        for n in range(50, 100):
            assert (await old.apply(AgentMessage(f"old-{n}", "a", "m", 0))).status == "started"
        assert (await old.layout.get()) == layout
        for shard in range(16):
            assert await redis.get(ShardKeys.of(shard).epoch) == "2"
