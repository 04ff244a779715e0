"""The delivery path against a real Redis: re-check, acknowledge, retry, dead-letter, trim."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import redis as sync_redis
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from tests.conftest import make_settings
from tests.support.delivering import reader, sweep_once
from tests.support.redis_server import RedisServer
from tracker.delivery.hold import Origin
from tracker.delivery.notification import Notification, Outgoing
from tracker.delivery.reader import StreamReader
from tracker.delivery.sinks import Deferred, Outcomes, StreamSink, build_sinks
from tracker.errors import DeliveryError
from tracker.model import AgentMessage, CustomerResponse
from tracker.redis.connection import Client, connect, redis_time_ms
from tracker.redis.keys import CONSUMER_GROUP, LAYOUT, ShardKeys, shard_of
from tracker.redis.replies import NoGroupError
from tracker.redis.scripts import run
from tracker.settings import Settings
from tracker.state.store import Store
from tracker.timing.maintenance import drop_idle_consumers, trim_call

INTERVAL = 100


class RecordingSink:
    """A sink that keeps what it was given and fails the way it is told to."""

    name = "recording"

    def __init__(self, error: DeliveryError | None = None) -> None:
        self.error = error
        self.sent: list[Outgoing] = []

    async def send(self, batch: Sequence[Outgoing]) -> Outcomes:
        if self.error is not None:
            return [self.error] * len(batch)
        self.sent.extend(batch)
        return [None] * len(batch)

    async def close(self) -> None:
        return None


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return make_settings(
        redis_server.url,
        tmp_path / "run",
        SHARD_COUNT="1",
        TIMEOUT_INTERVAL_MS=str(INTERVAL),
        MAX_DELIVERIES="3",
        RETRY_BASE_MS="1",
        DELIVERY_TIMEOUT_MS="100",
    )


async def xrange(redis: Client, key: str) -> list[tuple[str, dict[str, str]]]:
    return cast(list[tuple[str, dict[str, str]]], await redis.xrange(key))


async def fire(redis: Client, settings: Settings, *conversations: str) -> None:
    """Start each conversation in the past so its level 1 is due, and sweep it into the stream."""
    store = Store(redis, settings)
    since = await redis_time_ms(redis) - INTERVAL - 20
    for c in conversations:
        await store.apply(AgentMessage(c, "agent", f"m-{c}", since))
    assert (await sweep_once(redis, settings)).fired == len(conversations)


async def deliverer(redis: Client, settings: Settings, sink: RecordingSink) -> StreamReader:
    return await reader(redis, settings, [sink])


async def pending(redis: Client) -> int:
    info = await redis.xpending(ShardKeys.of(0).outbox, CONSUMER_GROUP)
    return int(info["pending"])


async def test_delivers_and_acknowledges(redis: Redis, settings: Settings) -> None:
    sink = RecordingSink()
    d = await deliverer(redis, settings, sink)
    await fire(redis, settings, "c1", "c2")
    assert await d.read([0], block_ms=None) == 2
    assert sorted(o.notification.conversation_id for o in sink.sent) == ["c1", "c2"]
    assert await pending(redis) == 0


async def test_an_answer_that_reached_redis_first_suppresses_the_send(
    redis: Redis, settings: Settings
) -> None:
    sink = RecordingSink()
    d = await deliverer(redis, settings, sink)
    await fire(redis, settings, "answered", "waiting")
    await Store(redis, settings).apply(CustomerResponse("answered", "cust", "r1", 0))
    await d.read([0], block_ms=None)
    assert [o.notification.conversation_id for o in sink.sent] == ["waiting"]
    assert await pending(redis) == 0  # the suppressed entry is acknowledged too


async def test_a_retried_entry_another_consumer_delivered_meanwhile_is_not_sent_again(
    redis: Redis, settings: Settings
) -> None:
    """Two entries wait for a retry (their way out was blocked); meanwhile another consumer
    claimed one of them and delivered it: the retry confirms each entry is still this
    consumer's (XCLAIM) and does not send that one again."""
    sink = RecordingSink()
    d = await deliverer(redis, settings, sink)
    await fire(redis, settings, "c1", "c2")
    stream = ShardKeys.of(0).outbox
    entries: Any = await redis.xreadgroup(CONSUMER_GROUP, d.consumer, {stream: ">"})
    batch = [Notification.from_entry(0, i, f) for i, f in entries[0][1]]
    unblocked = asyncio.Event()
    for n in batch:
        await d.pipeline.failures.failed(n, "recording", Deferred("blocked", 60, unblocked))
    await redis.xclaim(stream, CONSUMER_GROUP, "other", 0, [batch[0].entry_id])
    await redis.xack(stream, CONSUMER_GROUP, batch[0].entry_id)  # the other one delivered c1
    unblocked.set()
    await asyncio.gather(*d.pipeline.failures.retries)
    assert [o.notification.conversation_id for o in sink.sent] == ["c2"]
    assert await pending(redis) == 0


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_a_delivery_logs_one_line_with_its_event_id(
    redis: Redis,
    redis_server: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    level: str,
) -> None:
    """Issue 14.1: one line a delivered notification (event_id, conversation, level, sinks),
    at INFO by default, at DEBUG with DELIVERY_LOG_LEVEL=DEBUG; on both delivery paths."""
    for sinks in ("recording", "stream"):
        settings = make_settings(
            redis_server.url,
            tmp_path / sinks,
            SHARD_COUNT="1",
            TIMEOUT_INTERVAL_MS=str(INTERVAL),
            DELIVERY_LOG_LEVEL=level,
            NOTIFY_SINK="stream" if sinks == "stream" else "log",
        )
        d = await reader(
            redis,
            settings,
            [RecordingSink()] if sinks == "recording" else build_sinks(settings, redis),
        )
        caplog.clear()
        with caplog.at_level("DEBUG", logger="tracker.delivery.delivered"):
            await fire(redis, settings, f"c-{sinks}")
            assert await d.read([0], block_ms=None) == 1
        await d.close()
        (record,) = caplog.records
        n = Notification.from_entry(0, "0-1", (await xrange(redis, ShardKeys.of(0).outbox))[-1][1])
        assert record.levelname == level
        assert record.getMessage().startswith(
            f"delivered event_id={n.event_id} conversation=c-{sinks} level=1 sinks={sinks} "
        )


async def test_retries_then_dead_letters_after_max_deliveries(
    redis: Redis, settings: Settings
) -> None:
    sink = RecordingSink(DeliveryError("HTTP 500"))
    d = await deliverer(redis, settings, sink)
    await fire(redis, settings, "c1")
    await d.read([0], block_ms=None)
    for _ in range(100):
        if await redis.xlen(ShardKeys.of(0).dead_letters) or not d.pipeline.failures.retries:
            break
        await asyncio.sleep(0.05)
    await asyncio.gather(*d.pipeline.failures.retries)
    dead = await xrange(redis, ShardKeys.of(0).dead_letters)
    assert len(dead) == 1
    assert dead[0][1]["attempts"] == "3"
    assert dead[0][1]["c"] == "c1"
    assert dead[0][1]["reason"].startswith("max_deliveries")
    assert await pending(redis) == 0
    assert await redis.hlen(ShardKeys.of(0).attempts) == 0


async def test_a_permanent_failure_dead_letters_at_once(redis: Redis, settings: Settings) -> None:
    sink = RecordingSink(DeliveryError("HTTP 410", permanent=True))
    d = await deliverer(redis, settings, sink)
    await fire(redis, settings, "c1")
    await d.read([0], block_ms=None)
    dead = await xrange(redis, ShardKeys.of(0).dead_letters)
    assert len(dead) == 1
    assert dead[0][1]["attempts"] == "1"
    assert not d.pipeline.failures.retries


async def test_idle_entries_of_a_dead_consumer_are_claimed(
    redis: Redis, settings: Settings
) -> None:
    await fire(redis, settings, "c1")
    k = ShardKeys.of(0)
    await redis.xgroup_create(k.outbox, CONSUMER_GROUP, id="0")
    await redis.xreadgroup(CONSUMER_GROUP, "dead-consumer", {k.outbox: ">"}, count=10)
    sink = RecordingSink()
    d = await reader(redis, settings, [sink], "survivor")
    assert await d.claim([0]) == 0  # not idle long enough yet
    await asyncio.sleep(settings.delivery_timeout_ms / 1000 + 0.05)
    assert await d.claim([0]) == 1
    assert len(sink.sent) == 1
    assert await pending(redis) == 0


async def test_trim_keeps_unacknowledged_entries(redis: Redis, settings: Settings) -> None:
    sink = RecordingSink()
    d = await deliverer(redis, settings, sink)
    await fire(redis, settings, "a1", "a2")
    await d.read([0], block_ms=None)  # a1, a2 delivered and acknowledged
    k = ShardKeys.of(0)
    await fire(redis, settings, "p1", "p2")
    await redis.xreadgroup(CONSUMER_GROUP, "slow", {k.outbox: ">"}, count=1)  # p1 pending
    assert await redis.xlen(k.outbox) == 4
    assert await run(redis, trim_call(0)) == 2
    remaining = [
        Notification.from_entry(0, i, f).conversation_id for i, f in await xrange(redis, k.outbox)
    ]
    assert remaining == ["p1", "p2"]  # the pending entry and the unread one stay


async def test_a_deleted_stream_gets_its_group_back(redis: Redis, settings: Settings) -> None:
    d = await deliverer(redis, settings, RecordingSink())
    await redis.delete(ShardKeys.of(0).outbox)
    with pytest.raises(NoGroupError):
        await d.read([0], block_ms=None)
    await d.recreate_group([0])
    assert await d.read([0], block_ms=None) == 0


def test_shard_of_is_stable() -> None:
    """The shard of an id is fixed (crc32 of its UTF-8 bytes, modulo the count): pods, and
    the Lua scripts after a reshard, must agree on it for ever."""
    check = 0xCBF43926  # CRC-32 of "123456789", the algorithm's published check value
    assert [shard_of("123456789", n) for n in (16, 1000, 7)] == [check % n for n in (16, 1000, 7)]
    assert {shard_of(f"c{i}", 16) for i in range(200)} == set(range(16))


async def test_a_lower_level_redelivered_after_a_higher_one_is_superseded(
    redis: Redis, settings: Settings
) -> None:
    """Consumer A dies holding level 1; consumer B delivers level 2 first; A's level 1,
    claimed later, is not sent after it (guarantee 7): superseded, acknowledged, counted,
    and noted in the conversation's history."""
    sink = RecordingSink()
    d = await deliverer(redis, settings, sink)
    await fire(redis, settings, "c1")  # level 1 in the stream
    k = ShardKeys.of(0)
    level1 = (await xrange(redis, k.outbox))[0]
    await redis.xreadgroup(CONSUMER_GROUP, "dead", {k.outbox: ">"}, count=10)  # A took it
    await asyncio.sleep(INTERVAL / 1000)
    assert (await sweep_once(redis, settings)).fired == 1  # level 2
    await d.read([0], block_ms=None)  # B delivers level 2
    await redis.xclaim(k.outbox, CONSUMER_GROUP, d.consumer, 0, [level1[0]])  # A's, claimed
    await d.pipeline.handle([Notification.from_entry(0, level1[0], level1[1])], Origin.PENDING)
    assert [o.notification.level for o in sink.sent] == [2]
    assert await pending(redis) == 0
    history = str(await redis.hget(k.history, "c1")).split("\n")
    assert [h.split("|")[0] + h.split("|")[3] for h in history] == ["D2", "P1"]


async def test_the_stream_sink_writes_one_entry_per_event_with_its_fields(
    redis: Redis, settings: Settings
) -> None:
    sink = StreamSink(redis, "outbound", maxlen=1000)
    events = [
        Notification("1-0", 0, f"c{i}", 2, 1, "agent", "m1", 1_000_000, 1_060_000).outgoing(
            1_060_005
        )
        for i in range(3)
    ]
    assert await sink.send(events) == [None, None, None]
    entries = await xrange(redis, "outbound")
    assert [fields for _, fields in entries] == [
        {k: str(v) for k, v in e.payload.items()} for e in events
    ]
    assert entries[0][1]["fired_at"] == "1970-01-01T00:17:40.005Z"


def test_event_ids_identify_a_notification_and_nothing_else() -> None:
    """Guarantee 6: a redelivery carries the same event_id, so receivers can dedupe."""
    first = Notification("1-0", 0, "c1", 2, 1, "agent", "m1", 1_000_000, 1_060_000)
    redelivered = Notification("9-0", 0, "c1", 2, 1, "agent", "m1", 1_000_000, 1_060_000)
    assert first.event_id == redelivered.event_id
    assert first.outgoing(5).payload["event_id"] == first.event_id
    others = {
        Notification("1-0", 0, "c2", 2, 1, "agent", "m1", 1_000_000, 1_060_000).event_id,
        Notification("1-0", 0, "c1", 3, 1, "agent", "m1", 1_000_000, 1_090_000).event_id,
        Notification("1-0", 0, "c1", 2, 2, "agent", "m2", 1_000_001, 1_060_001).event_id,
    }
    assert first.event_id not in others
    assert len(others) == 3


async def test_consumers_of_gone_pods_are_dropped_but_not_those_with_pending_entries(
    redis: Redis, settings: Settings
) -> None:
    """Guarantee 5: a consumer group does not keep every consumer that ever lived."""
    k = ShardKeys.of(0)
    await redis.xgroup_create(k.outbox, CONSUMER_GROUP, id="0", mkstream=True)
    await redis.xadd(k.outbox, {"c": "c1"})
    await redis.xreadgroup(CONSUMER_GROUP, "holds-one", {k.outbox: ">"}, count=1)
    await redis.xgroup_createconsumer(k.outbox, CONSUMER_GROUP, "idle-and-empty")
    await asyncio.sleep(0.01)
    await drop_idle_consumers(redis, k.outbox, idle_ms=3_600_000)
    assert len(await redis.xinfo_consumers(k.outbox, CONSUMER_GROUP)) == 2  # not idle enough
    await drop_idle_consumers(redis, k.outbox, idle_ms=0)
    names = [c["name"] for c in await redis.xinfo_consumers(k.outbox, CONSUMER_GROUP)]
    assert names == ["holds-one"]


BAD_ENTRIES = {
    "wrong field count": {"e": "not|a|valid|entry"},
    "non-numeric times": {"e": "c9|1|1|yesterday|soon|a|m"},
    "unknown level": {"e": "c9|7|1|0|0|a|m"},
    "empty": {"e": ""},
    "binary": {"e": "\udcff\udcfe|1|1|0|0|a|m"},
    "not ours": {"hello": "world"},
}


@pytest.mark.parametrize("kind", sorted(BAD_ENTRIES))
async def test_an_unreadable_entry_is_dead_lettered_and_the_rest_delivered(
    redis: Redis, redis_server: RedisServer, settings: Settings, kind: str
) -> None:
    """Guarantee 8: one malformed entry among good ones goes to the dead letters after one
    attempt, with its fields as they were and a reason; the others are delivered; nothing
    stays pending; the consumer goes on (before: ValueError, the consumer crash-looped)."""
    sink = RecordingSink()
    client = connect(settings)  # as the consumer's: how it decodes replies matters here
    raw = sync_redis.Redis(port=redis_server.port)  # bytes, as another client may write them
    k = ShardKeys.of(0)
    try:
        d = await deliverer(client, settings, sink)
        raw_fields = {f: v.encode("utf-8", "surrogateescape") for f, v in BAD_ENTRIES[kind].items()}
        raw.xadd(k.outbox, raw_fields)  # type: ignore[arg-type]
        await fire(redis, settings, "c1")
        assert await d.read([0], block_ms=None) == 1
        assert [o.notification.conversation_id for o in sink.sent] == ["c1"]
        ((_, dead),) = await xrange(client, k.dead_letters)
        assert dead["reason"].startswith("malformed: ")
        assert dead["attempts"] == "1"
        assert await pending(redis) == 0
        await fire(redis, settings, "c2")  # it goes on
        assert await d.read([0], block_ms=None) == 1
        await d.close()
        entries: Any = raw.xrange(k.dead_letters)
        ((_, fields),) = entries
        assert fields == {  # kept as it was, byte for byte
            b"reason": dead["reason"].encode(),
            b"attempts": b"1",
            b"source_id": dead["source_id"].encode(),
            **{f.encode(): v for f, v in raw_fields.items()},
        }
    finally:
        await client.aclose()
        raw.close()


class RaisingSink(RecordingSink):
    """A sink with a bug: it raises on the conversation named `poison`."""

    async def send(self, batch: Sequence[Outgoing]) -> Outcomes:
        if any(o.notification.conversation_id == "poison" for o in batch):
            raise KeyError("a bug in a sink")
        return await super().send(batch)


async def test_an_event_a_sink_raises_on_is_dead_lettered_and_the_rest_delivered(
    redis: Redis, settings: Settings
) -> None:
    sink = RaisingSink()
    d = await deliverer(redis, settings, sink)
    await fire(redis, settings, "c1", "poison", "c2")
    assert await d.read([0], block_ms=None) == 3
    assert sorted(o.notification.conversation_id for o in sink.sent) == ["c1", "c2"]
    ((_, dead),) = await xrange(redis, ShardKeys.of(0).dead_letters)
    assert dead["reason"] == "unexpected: KeyError: 'a bug in a sink'"
    assert (dead["c"], dead["attempts"]) == ("poison", "1")
    assert await pending(redis) == 0
    await d.close()


async def test_a_batch_left_pending_by_a_redis_error_is_read_again_at_once(
    redis: Redis, redis_server: RedisServer, settings: Settings, tmp_path: Path
) -> None:
    """Guarantee 9: the releaser's batch fails on Redis (here: its connection is killed) and
    stays pending; the read loop reads its own pending list again on its next round, instead
    of waiting DELIVERY_TIMEOUT_MS for a claim (before: about a minute with the defaults)."""
    from tracker.delivery.loop import serve
    from tracker.pod.heartbeat import Heartbeat

    slow = make_settings(
        redis_server.url, tmp_path / "slow", SHARD_COUNT="1", TIMEOUT_INTERVAL_MS="300"
    )  # DELIVERY_TIMEOUT_MS: the default 60 s
    sink = RecordingSink()
    d = await reader(redis, slow, [sink])
    since = await redis_time_ms(redis)
    await Store(redis, slow).apply(AgentMessage("c1", "agent", "m1", since))
    assert (await sweep_once(redis, slow, prefetch_ms=1000)).fired == 1
    assert await d.read([0], block_ms=None) == 1  # read, and held: due in 300 ms
    assert len(d.pipeline.hold) == 1

    failing = True
    original = d.pipeline.handle

    async def handle(batch: Sequence[Notification], origin: Origin) -> None:
        nonlocal failing
        if failing and batch:  # the releaser's batch, at its due time
            failing = False
            from redis.exceptions import ConnectionError as RedisConnectionError

            raise RedisConnectionError("Redis went away")
        await original(batch, origin)

    d.pipeline.handle = handle  # type: ignore[method-assign]
    stop = asyncio.Event()
    loop = asyncio.create_task(serve(d, slow, lambda: [0], stop, Heartbeat(slow, "c-0")))
    try:
        deadline = time.monotonic() + 5
        while not sink.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [o.notification.conversation_id for o in sink.sent] == ["c1"]
        assert time.monotonic() < deadline
    finally:
        stop.set()
        await loop
        await d.close()
    assert await pending(redis) == 0


async def test_get_shows_what_reached_the_receiver_and_keeps_it_after_an_answer(
    redis: Redis, settings: Settings
) -> None:
    """The issue's case: levels 1 and 2 delivered, then the answer. GET keeps level_fired 2
    (before: 0) and says per level: delivered (when, by which sink), cancelled."""
    sink = RecordingSink()
    d = await deliverer(redis, settings, sink)
    store = Store(redis, settings)
    await fire(redis, settings, "c1")
    await d.read([0], block_ms=None)
    await asyncio.sleep(INTERVAL / 1000)
    await sweep_once(redis, settings)
    await d.read([0], block_ms=None)
    assert [o.notification.level for o in sink.sent] == [1, 2]
    await store.apply(CustomerResponse("c1", "u", "r1", 0))
    view = await store.get("c1")
    assert view is not None
    assert (view.state, view.level_fired) == ("answered", 2)
    levels = store.levels(view)
    assert [v.status for v in levels] == ["delivered", "delivered", "cancelled"]
    assert levels[0].sinks == ("recording",)
    assert levels[0].delivered_ms is not None
    assert [h["kind"] for h in store.timeline(view)] == [
        "started",
        "delivered",
        "delivered",
        "answered",
    ]


async def test_get_shows_a_level_fired_but_not_delivered_as_pending_with_its_error(
    redis: Redis, settings: Settings
) -> None:
    """A webhook down: the level fired, nothing reached the receiver. GET says pending, how
    many attempts, the last error (before: "level_fired" alone, as if it had arrived)."""
    sink = RecordingSink(DeliveryError("webhook: HTTP 503"))
    d = await deliverer(redis, settings, sink)
    store = Store(redis, settings)
    await fire(redis, settings, "c1")
    await d.read([0], block_ms=None)
    view = await store.get("c1")
    assert view is not None
    level1 = store.levels(view)[0]
    assert (level1.status, level1.attempts) == ("pending", 1)
    assert level1.last_error == "webhook: HTTP 503"
    assert level1.delivered_ms is None
    await d.close()


async def test_at_maxmemory_deliveries_are_acknowledged_and_the_stream_sink_waits(
    tmp_path: Path,
) -> None:
    """A Redis at maxmemory (noeviction) refuses writes with OOM. A webhook-like sink's
    deliveries are still acknowledged (the ack script's XACK comes first: Redis takes it),
    and the stream sink's events wait without spending attempts (before: the OOM reply
    crashed the consumer), to go out once memory is back."""
    server = RedisServer(tmp_path / "oom")
    server.start()
    client = connect(make_settings(server.url, tmp_path / "run"))
    try:
        settings = make_settings(
            server.url, tmp_path / "run", SHARD_COUNT="1", TIMEOUT_INTERVAL_MS=str(INTERVAL)
        )
        sink = RecordingSink()
        d = await deliverer(client, settings, sink)
        stream = StreamSink(client, "out", 1000)
        await fire(client, settings, "c1", "c2")
        used = int((await client.info("memory"))["used_memory"])
        await client.config_set("maxmemory", used // 2)
        with pytest.raises(OutOfMemoryError):
            await client.hset("x", "y", "z")
        d.pipeline.sinks = [sink]
        assert await d.read([0], block_ms=None) == 2
        assert len(sink.sent) == 2
        assert await pending(client) == 0  # acknowledged at maxmemory

        outcomes = await stream.send(sink.sent)
        assert all(isinstance(o, Deferred) for o in outcomes), outcomes
        await client.config_set("maxmemory", 0)
        assert await stream.send(sink.sent) == [None, None]
        await d.close()
    finally:
        await client.aclose()
        server.stop()


async def test_the_stream_sink_delivers_in_one_call_and_finds_moved_ones(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """NOTIFY_SINK=stream alone: re-check, write and acknowledge in one deliver_stream.lua
    call a shard; a conversation a reshard moved to another shard is found there by the
    general path (re-check in its new shard, the sink, the ack script)."""
    settings = make_settings(
        redis_server.url,
        tmp_path / "run",
        SHARD_COUNT="1",
        TIMEOUT_INTERVAL_MS=str(INTERVAL),
        NOTIFY_SINK="stream",
        NOTIFY_STREAM="out",
    )
    d = await reader(redis, settings, build_sinks(settings, redis))
    assert d.pipeline.direct is not None
    moved = next(c for c in (f"m{i}" for i in range(100)) if shard_of(c, 2) == 1)
    await fire(redis, settings, "c1", moved, "c3")
    await Store(redis, settings).apply(CustomerResponse("c3", "u", "r", 0))
    # a reshard to 2 shards moved one of them: its record now lives in shard 1
    record = await redis.hget(ShardKeys.of(0).records, moved)
    await redis.hdel(ShardKeys.of(0).records, moved)
    await redis.hset(ShardKeys.of(1).records, moved, str(record))
    await redis.hset(LAYOUT, mapping={"count": 2, "epoch": 1})
    assert await d.read([0], block_ms=None) == 3
    out = await xrange(redis, "out")
    assert sorted(f["conversation_id"] for _, f in out) == sorted(["c1", moved])
    assert await pending(redis) == 0
    assert await redis.hget(ShardKeys.of(0).history, "c1") is None  # noted a moment later
    await d.close()  # which writes the notes waiting
    history = await redis.hget(ShardKeys.of(0).history, "c1")
    assert str(history).split("|")[0::4] == ["D", "stream"]
    assert str(await redis.hget(ShardKeys.of(0).history, "c3")).startswith("U|")
    # no note left behind where the moved conversation has no record: nothing would retire it
    assert await redis.hget(ShardKeys.of(0).history, moved) is None
