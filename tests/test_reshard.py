"""Resharding against a real Redis, without pods: the layout and its epoch fence, moves that
keep every conversation's state, writers and readers during a move, and the whole
`tracker reshard` run growing and shrinking the shard count."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.support.delivering import sweep_once
from tests.support.redis_server import RedisServer
from tracker.delivery.notification import Outgoing
from tracker.delivery.pipeline import Pipeline
from tracker.delivery.reader import StreamReader
from tracker.delivery.sinks import Outcomes
from tracker.model import AgentMessage, Conversation, CustomerResponse, Event, TrackResult
from tracker.ops.reshard import Resharder
from tracker.redis.connection import redis_time_ms
from tracker.redis.keys import LAYOUT, ShardKeys, shard_of
from tracker.redis.replies import EpochRefused
from tracker.redis.scripts import run
from tracker.settings import Settings
from tracker.state.layout import Layout, LiveLayout, read_layout
from tracker.state.moves import move, take_out_call
from tracker.state.store import Store, apply_call

INTERVAL = 60_000  # nothing comes due during these tests unless a test says so


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return make_settings(
        redis_server.url, tmp_path / "run", SHARD_COUNT="8", TIMEOUT_INTERVAL_MS=str(INTERVAL)
    )


def resharder(redis: Redis, settings: Settings, lines: list[str] | None = None) -> Resharder:
    out = lines.append if lines is not None else (lambda _: None)
    return Resharder(redis, settings, drain_timeout_s=5, leader_wait_s=0, settle_s=0, out=out)


async def begin(redis: Redis, settings: Settings, to: int) -> Layout:
    """Start a reshard the way the command does (new layout, every shard fenced) and stop
    there, before any conversation moves."""
    r = resharder(redis, settings)
    read = await read_layout(redis, settings.shard_count)
    started = Layout(to, read.count, read.epoch + 1)
    assert await r._set(read, started)
    assert await r._fence(started)
    return started


def moving_ids(count: int, previous: int, n: int) -> list[str]:
    """`n` conversation ids whose shard differs between the two counts."""
    ids = (f"conv-{i}" for i in range(10_000))
    return [c for c in ids if shard_of(c, count) != shard_of(c, previous)][:n]


async def where(redis: Redis, c: str, shards: int) -> list[int]:
    """The shards whose records hold the conversation."""
    return [s for s in range(shards) if await redis.hexists(ShardKeys.of(s).records, c)]


async def populate(store: Store, redis: Redis, n: int) -> dict[str, Conversation]:
    """n conversations: a third answered, the rest waiting, some restarted; their views."""
    now = await redis_time_ms(redis)
    ids = [f"conv-{i}" for i in range(n)]
    await store.apply_many([AgentMessage(c, "agent", f"m1-{c}", now - 1000) for c in ids])
    await store.apply_many([AgentMessage(c, "agent", f"m2-{c}", now) for c in ids[1::5]])
    await store.apply_many([CustomerResponse(c, "cust", f"r-{c}", now + 10) for c in ids[::3]])
    views = {c: await store.get(c) for c in ids}
    assert all(v is not None for v in views.values())
    return {c: v for c, v in views.items() if v is not None}


# --- the layout and its fence ---------------------------------------------------------------


async def test_first_use_records_the_layout_and_later_settings_follow_it(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    assert await read_layout(redis, 8) == Layout(8)
    assert await redis.hgetall(LAYOUT) == {"count": "8"}
    other = make_settings(settings.redis_url, tmp_path / "other", SHARD_COUNT="16")
    live = LiveLayout(redis, other)
    assert (await live.get()).count == 8  # Redis holds the live count, not SHARD_COUNT


async def test_a_write_routed_by_an_old_layout_is_refused_and_changes_nothing(
    redis: Redis, settings: Settings
) -> None:
    k = ShardKeys.of(3)
    await redis.set(k.epoch, 2)

    async def write(epoch: int, event: Event) -> Any:
        return await run(redis, apply_call(3, epoch, [event], settings))

    with pytest.raises(EpochRefused) as refused:
        await write(1, AgentMessage("c", "a", "m", 0))
    assert refused.value.epoch == 2
    with pytest.raises(EpochRefused) as refused:
        await write(1, CustomerResponse("c", "u", "r", 0))
    assert refused.value.epoch == 2
    assert sorted(await redis.keys("*")) == [k.epoch]
    # the current epoch is accepted; a newer one raises the shard's
    await write(2, AgentMessage("c", "a", "m", 0))
    await write(3, AgentMessage("c2", "a", "m", 0))
    assert await redis.get(k.epoch) == "3"


async def test_two_reshards_cannot_interleave(redis: Redis, settings: Settings) -> None:
    read = await read_layout(redis, 8)
    r = resharder(redis, settings)
    assert await r._set(read, Layout(32, 8, 1))
    assert not await r._set(read, Layout(4, 8, 1))  # read before the first one changed it
    lines: list[str] = []
    assert await resharder(redis, settings, lines).run(4) == 1
    assert "in progress" in lines[-1]


# --- moves ----------------------------------------------------------------------------------


async def test_a_move_keeps_every_conversation_exactly_as_it_was(
    redis: Redis, settings: Settings
) -> None:
    store = Store(redis, settings)
    before = await populate(store, redis, 300)
    assert any(view.history for view in before.values())  # restarted ones: their history moves
    layout = await begin(redis, settings, 32)
    moved = await move(redis, layout, list(before))
    assert moved == sum(1 for c in before if layout.source(c) is not None) > 0
    after = Store(redis, settings)
    for c, view in before.items():
        assert await after.get(c) == view
        assert await where(redis, c, 32) == [shard_of(c, 32)]
    for s in range(8):
        assert not await redis.exists(ShardKeys.of(s).moving)
    # the due times moved too: the new shards' sweepers will fire them
    for c, view in before.items():
        due = await redis.zscore(ShardKeys.of(shard_of(c, 32)).waiting, c)
        assert due == (view.next_due_ms if view.state == "waiting" else None)


async def test_an_interrupted_move_loses_nothing_and_is_finished_later(
    redis: Redis, settings: Settings
) -> None:
    store = Store(redis, settings)
    (c,) = moving_ids(32, 8, 1)
    now = await redis_time_ms(redis)
    await store.apply(AgentMessage(c, "agent", "m1", now))
    before = await store.get(c)
    layout = await begin(redis, settings, 32)
    await run(redis, take_out_call(shard_of(c, 8), layout.epoch, [c]))  # then "crash"
    assert await where(redis, c, 32) == []  # only in the old shard's moving_conversations
    reader = Store(redis, settings)
    assert await reader.get(c) == before  # readers still see it
    assert await resharder(redis, settings).run(32) == 0
    assert await reader.get(c) == before
    assert await where(redis, c, 32) == [shard_of(c, 32)]


async def test_writers_during_a_reshard_move_the_conversation_first(
    redis: Redis, settings: Settings
) -> None:
    """A reply to a conversation still in its old shard answers with the right response
    time, a replayed agent message is still a duplicate, and nothing is left behind."""
    store = Store(redis, settings)
    a, b, c = moving_ids(32, 8, 3)
    now = await redis_time_ms(redis)
    for conversation in (a, b, c):
        await store.apply(AgentMessage(conversation, "agent", "m1", now - 5000))
    await begin(redis, settings, 32)
    assert (await store.layout.get()).previous is None  # this writer has not noticed yet
    reply = await store.apply(CustomerResponse(a, "cust", "r1", now))
    assert (reply.status, getattr(reply, "response_time_ms", None)) == ("answered", 5000)
    replay = await store.apply(AgentMessage(b, "agent", "m1", now))
    assert isinstance(replay, TrackResult)
    assert (replay.status, replay.waiting_since_ms) == ("duplicate", now - 5000)
    assert store.layout.current == Layout(32, 8, 1)  # the refusal made it reload
    for conversation in (a, b):
        assert await where(redis, conversation, 32) == [shard_of(conversation, 32)]
    assert await where(redis, c, 32) == [shard_of(c, 8)]  # untouched: the command moves it


async def test_a_notification_from_the_old_shard_is_checked_where_the_record_went(
    redis: Redis, settings: Settings
) -> None:
    """Fired in the old shard, delivered after the move: sent if still current, suppressed
    if answered since (at its new shard)."""
    store = Store(redis, settings)
    current, answered = moving_ids(32, 8, 2)
    now = await redis_time_ms(redis)
    for c in (current, answered):
        await store.apply(AgentMessage(c, "agent", "m1", now - INTERVAL - 10))
    for c in (current, answered):  # fire level 1 into the old shard's stream
        assert (await sweep_once(redis, settings, shard_of(c, 8))).fired == 1
    await begin(redis, settings, 32)
    await store.apply(CustomerResponse(answered, "cust", "r1", now))  # moves it, answers it
    await move(redis, await store.layout.refresh(), [current])
    sent: list[Outgoing] = []

    class Sink:
        name = "recording"

        async def send(self, batch: Any) -> Outcomes:
            sent.extend(batch)
            return [None] * len(batch)

        async def close(self) -> None:
            return None

    d = StreamReader(Pipeline(redis, settings, [Sink()], "consumer-test"), "consumer-test")
    shards = sorted({shard_of(c, 8) for c in (current, answered)})
    for s in shards:
        await d.ensure_group(s)
    assert await d.read(shards, block_ms=None) == 2
    assert [o.notification.conversation_id for o in sent] == [current]


# --- the command ----------------------------------------------------------------------------


async def test_reshard_grows_then_shrinks_and_every_conversation_survives(
    redis: Redis, settings: Settings
) -> None:
    store = Store(redis, settings)
    before = await populate(store, redis, 2000)
    old = ShardKeys.of(5)
    await redis.hset(ShardKeys.of(13).counters, mapping={"total": 4, "level1": 4})
    await redis.xadd(ShardKeys.of(13).dead_letters, {"c": "x", "reason": "test"})
    lines: list[str] = []
    assert await resharder(redis, settings, lines).run(32) == 0, lines
    assert await read_layout(redis, 8) == Layout(32, None, 1)
    reader = Store(redis, settings)
    for c, view in before.items():
        assert await reader.get(c) == view
    counts = [await redis.hlen(ShardKeys.of(s).records) for s in range(32)]
    assert sum(counts) == 2000
    assert min(counts) > 0  # spread over all 32
    for c in list(before)[:200]:
        assert await where(redis, c, 32) == [shard_of(c, 32)]

    assert await resharder(redis, settings, lines).run(8) == 0, lines
    assert await read_layout(redis, 8) == Layout(8, None, 2)
    for c, view in before.items():
        assert await reader.get(c) == view
    assert [await redis.hlen(ShardKeys.of(s).records) for s in range(8)] != [0] * 8
    for s in range(8, 32):  # the removed shards' data is gone, their fences stay
        k = ShardKeys.of(s)
        assert not await redis.exists(k.records, k.waiting, k.outbox, k.counters, k.moving)
        assert await redis.get(k.epoch) == "2"
    # shard 13's counters and dead letters now count in shard 13 % 8 = 5
    assert await redis.hget(old.counters, "total") == "4"
    dead: Any = await redis.xrange(old.dead_letters)
    assert [fields["c"] for _, fields in dead] == ["x"]
    assert await resharder(redis, settings, lines).run(8) == 0
    assert lines[-1] == "the layout already has 8 shards"


def test_the_ids_used_here_really_change_shard() -> None:
    """A guard on the helper the tests above rely on."""
    for c in moving_ids(32, 8, 20):
        assert zlib.crc32(c.encode()) % 32 != zlib.crc32(c.encode()) % 8
