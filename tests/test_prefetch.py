"""Prefetch: a level staged before its due time is held by the consumer until it is due,
re-checked then, and shown as not fired until then."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.support.delivering import sweep_once
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.test_delivery import RecordingSink, deliverer, pending
from tracker.delivery.hold import Origin
from tracker.delivery.notification import Notification, Outgoing
from tracker.delivery.reader import StreamReader
from tracker.delivery.sinks import Outcomes
from tracker.model import AgentMessage, CustomerResponse
from tracker.redis.connection import redis_time_ms
from tracker.settings import Settings
from tracker.state.store import Store

INTERVAL = 1000
AHEAD_MS = 400  # level 1 is due this long after it is staged


class TimedSink(RecordingSink):
    """Keeps what it was sent and when (this machine's clock, which Redis's TIME shares)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def send(self, batch: Sequence[Outgoing]) -> Outcomes:
        self.times += [time.time() * 1000] * len(batch)
        return await super().send(batch)

    @property
    def delivered(self) -> list[tuple[float, Outgoing]]:
        return list(zip(self.times, self.sent, strict=True))


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return make_settings(
        redis_server.url,
        tmp_path / "run",
        SHARD_COUNT="1",
        TIMEOUT_INTERVAL_MS=str(INTERVAL),
        PREFETCH_MS="1000",
    )


async def stage(redis: Redis, settings: Settings, *conversations: str) -> int:
    """Start conversations whose level 1 is due AHEAD_MS from now and sweep them with the
    settings' prefetch: staged in the stream early. Returns their due time."""
    since = await redis_time_ms(redis) - INTERVAL + AHEAD_MS
    store = Store(redis, settings)
    for c in conversations:
        await store.apply(AgentMessage(c, "agent", f"m-{c}", since))
    swept = await sweep_once(redis, settings, prefetch_ms=settings.prefetch_ms)
    assert swept.fired == len(conversations)
    return since + INTERVAL


async def wait_sent(sink: TimedSink, count: int, timeout: float = 5.0) -> None:
    await wait_until(lambda: len(sink.sent) >= count, timeout, interval=0.01)


async def wait_acknowledged(redis: Redis, reader: StreamReader, timeout: float = 5.0) -> None:
    """Until nothing is pending in the stream and nothing held: every entry was sent (or
    suppressed) and acknowledged, so no send can follow."""

    async def done() -> bool:
        return await pending(redis) == 0 and len(reader.pipeline.hold) == 0

    await wait_until(done, timeout, interval=0.01)


async def test_a_staged_notification_is_held_until_due_then_sent(
    redis: Redis, settings: Settings
) -> None:
    sink = TimedSink()
    d = await deliverer(redis, settings, sink)
    due = await stage(redis, settings, "c1", "c2")
    assert await d.read([0], block_ms=None) == 2
    assert sink.sent == []
    assert len(d.pipeline.hold) == 2  # read, parsed, held
    await wait_sent(sink, 2)
    assert sorted(o.notification.conversation_id for _, o in sink.delivered) == ["c1", "c2"]
    assert all(at >= due for at, _ in sink.delivered)  # never before its due time
    assert all(at - due < 500 for at, _ in sink.delivered)
    await wait_acknowledged(redis, d)  # the acknowledgement follows the send
    await d.close()


async def test_an_answer_while_held_suppresses_the_send(redis: Redis, settings: Settings) -> None:
    sink = TimedSink()
    d = await deliverer(redis, settings, sink)
    await stage(redis, settings, "answered", "waiting")
    await d.read([0], block_ms=None)
    await Store(redis, settings).apply(CustomerResponse("answered", "cust", "r1", 0))
    await wait_sent(sink, 1)
    # the suppressed one is acknowledged (at its due time, after the re-check) too
    await wait_acknowledged(redis, d)
    assert [o.notification.conversation_id for _, o in sink.delivered] == ["waiting"]
    await d.close()


async def test_a_clock_running_ahead_of_redis_never_sends_early(
    redis: Redis, settings: Settings
) -> None:
    """This process believes Redis's clock is 5 s ahead: it releases at once, the re-check
    answers 'not due' with Redis's clock, and the notification is held again, till due."""
    sink = TimedSink()
    d = await deliverer(redis, settings, sink)
    d.pipeline.hold.clock.offset_ms = 5000
    due = await stage(redis, settings, "c1")
    await d.read([0], block_ms=None)
    await wait_sent(sink, 1)
    ((at, _),) = sink.delivered
    assert at >= due
    assert abs(d.pipeline.hold.clock.offset_ms) < 100  # learnt from the re-check's reply
    await d.close()


async def test_close_delivers_what_is_held(redis: Redis, settings: Settings) -> None:
    sink = TimedSink()
    d = await deliverer(redis, settings, sink)
    due = await stage(redis, settings, "c1")
    await d.read([0], block_ms=None)
    await d.close()
    ((at, _),) = sink.delivered
    assert at >= due
    assert await pending(redis) == 0


async def test_a_held_entry_read_again_is_held_once(redis: Redis, settings: Settings) -> None:
    """The own pending list (read after a restart of the shard set) holds what is already
    held: it is delivered once."""
    sink = TimedSink()
    d = await deliverer(redis, settings, sink)
    await stage(redis, settings, "c1")
    await d.read([0], block_ms=None)
    await d.drain_own([0])
    assert len(d.pipeline.hold) == 1
    await wait_sent(sink, 1)
    await wait_acknowledged(redis, d)  # nothing left that could be sent again
    assert len(sink.sent) == 1
    await d.close()


async def test_get_shows_a_staged_level_as_not_fired_until_due(
    redis: Redis, settings: Settings
) -> None:
    store = Store(redis, settings)
    due = await stage(redis, settings, "c1")
    view = await store.get("c1")
    assert view is not None
    assert (view.state, view.level_fired, view.next_due_ms) == ("waiting", 0, due)
    await asyncio.sleep(
        (due - await redis_time_ms(redis)) / 1000 + 0.02
    )  # past the due time: what is shown then
    view = await store.get("c1")
    assert view is not None
    assert (view.level_fired, view.next_due_ms) == (1, due + INTERVAL)


class GatedSink(TimedSink):
    """Blocks every send until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def send(self, batch: Sequence[Outgoing]) -> Outcomes:
        self.entered.set()
        await self.gate.wait()
        return await super().send(batch)


async def test_an_entry_claimed_while_its_held_copy_is_being_sent_is_sent_once(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Phase 1 claims the lease holder's own entries idle half a lease TTL: one may be
    claimed while the releaser is sending it. The claim's copy is dropped."""
    sink = GatedSink()
    d = await deliverer(redis, settings, sink)
    await stage(redis, settings, "c1")
    await d.read([0], block_ms=None)
    await asyncio.wait_for(sink.entered.wait(), 5)  # due, taken, in the sink
    claimed = asyncio.Event()
    submit = d.pipeline.submit

    async def submitted(batch: Sequence[Notification], origin: Origin) -> None:
        await submit(batch, origin)
        claimed.set()

    monkeypatch.setattr(d.pipeline, "submit", submitted)
    claim = asyncio.create_task(d.claim([0], min_idle_ms=0))  # read again: pending list
    await asyncio.wait_for(claimed.wait(), 5)  # the claim's copy reached the pipeline
    sink.gate.set()
    assert await claim == 1
    await d.close()
    assert len(sink.sent) == 1
    assert await pending(redis) == 0
    n = sink.sent[0].notification
    assert not d.pipeline.hold.holds(n)  # settled: nothing left behind


class SlowFirstLevel(RecordingSink):
    """A receiver that takes 0.5 s to answer for level 1; records the order answers end."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: list[int] = []

    async def send(self, batch: Sequence[Outgoing]) -> Outcomes:
        if any(o.notification.level == 1 for o in batch):
            await asyncio.sleep(0.5)
        self.answered += [o.notification.level for o in batch]
        return await super().send(batch)


async def test_a_level_released_while_the_one_before_is_in_flight_waits_for_it(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Guarantee 7 with held batches released side by side: level 2 falls due while level
    1's webhook answer is still on its way; level 2's batch waits for level 1's, so the
    receiver never gets a higher level before a lower one (other conversations don't wait)."""
    settings = make_settings(
        redis_server.url,
        tmp_path / "run",
        SHARD_COUNT="1",
        TIMEOUT_INTERVAL_MS="200",
        PREFETCH_MS="1000",
    )
    sink = SlowFirstLevel()
    d = await deliverer(redis, settings, sink)
    since = await redis_time_ms(redis) - 200 + 300  # level 1 due in 300 ms, level 2 in 500
    await Store(redis, settings).apply(AgentMessage("c1", "agent", "m-c1", since))
    assert (await sweep_once(redis, settings, prefetch_ms=1000)).fired == 1  # level 1
    assert (await sweep_once(redis, settings, prefetch_ms=1000)).fired == 1  # level 2
    assert await d.read([0], block_ms=None) == 2
    await wait_until(lambda: len(sink.answered) == 2, timeout=5)
    assert sink.answered == [1, 2]
    assert await pending(redis) == 0
    await d.close()
