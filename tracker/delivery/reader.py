"""Reading the shard outboxes as one consumer of their delivery group: new entries, this
consumer's own pending ones, and those idle past DELIVERY_TIMEOUT_MS that a dead consumer
left. What it reads goes to the pipeline; an entry that cannot be read is dead-lettered at
once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from tracker import metrics
from tracker.delivery.hold import Origin
from tracker.delivery.ledger import dead_letter_call
from tracker.delivery.notification import Entries, MalformedEntry, Notification
from tracker.delivery.pipeline import Pipeline
from tracker.pod.heartbeat import Heartbeat
from tracker.redis import cluster
from tracker.redis.connection import redis_time_ms
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys, shard_of_key
from tracker.redis.replies import BusyGroupError
from tracker.redis.scripts import run

log = logging.getLogger(__name__)

READ_COUNT = 512
#: On Redis Cluster a read cannot block across shards: an empty round sleeps this long.
CLUSTER_POLL_MS = 20
#: While the hold is full, the read loop reports itself alive this often.
ROOM_BEAT_S = 5.0


class StreamReader:
    def __init__(self, pipeline: Pipeline, consumer: str) -> None:
        self.pipeline = pipeline
        self.redis = pipeline.redis
        self.settings = pipeline.settings
        self.consumer = consumer
        self.cluster = cluster.is_cluster(self.redis)
        self.heartbeat: Heartbeat | None = None  # the read loop's, set by loop.serve

    async def ensure_group(self, shard: int) -> None:
        """Create the delivery group (and the stream) when missing."""
        with contextlib.suppress(BusyGroupError):
            await self.redis.xgroup_create(
                ShardKeys.of(shard).outbox, CONSUMER_GROUP, id="0", mkstream=True
            )

    async def recreate_group(self, shards: Iterable[int]) -> None:
        for shard in shards:
            await self.ensure_group(shard)
        metrics.STREAM_RECREATED.inc()
        log.warning("consumer group recreated consumer=%s", self.consumer)

    async def sync_clock(self) -> None:
        """Read Redis's clock, so held notifications are released on it from the start."""
        self.pipeline.hold.clock.observe(await redis_time_ms(self.redis))

    async def read(self, shards: Sequence[int], *, block_ms: int | None) -> int:
        """Read one batch of new entries and hand it to the pipeline.

        On Redis Cluster one XREADGROUP cannot span shards (slots): several shards are
        then read one by one without blocking, and an empty round sleeps briefly instead.
        """
        if not shards:
            return 0
        if len(shards) > 1 and self.cluster:
            counts = await asyncio.gather(*(self.read([s], block_ms=None) for s in shards))
            if not sum(counts) and block_ms:
                await asyncio.sleep(min(block_ms, CLUSTER_POLL_MS) / 1000)
            return sum(counts)
        streams = {ShardKeys.of(s).outbox: ">" for s in shards}
        reply = await self._read_group(streams, block_ms)
        batch: list[Notification] = []
        for name, entries in _stream_items(reply):
            batch += await self._parse(shard_of_key(name), entries)
        await self.pipeline.submit(batch, Origin.NEW)
        await self._wait_room()
        return len(batch)

    async def _read_group(self, streams: dict[str, str], block_ms: int | None) -> Any:
        return await cluster.read_group(
            self.redis, CONSUMER_GROUP, self.consumer, streams, READ_COUNT, block_ms
        )

    async def _wait_room(self) -> None:
        """Wait until the hold has room (a burst can fill it), telling the role's heartbeat
        meanwhile that the loop is alive: waiting for due times is progress too."""
        hold = self.pipeline.hold
        while not hold.has_room():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hold.wait_room(), ROOM_BEAT_S)
            if self.heartbeat is not None:
                self.heartbeat.progress()

    async def _parse(self, shard: int, entries: Entries) -> list[Notification]:
        """The notifications of `entries`; one that cannot be read is dead-lettered at once
        (another attempt would read it no better), so it cannot stop the consumer."""
        out: list[Notification] = []
        for entry_id, fields in entries:
            if not fields:  # deleted since it was read
                continue
            try:
                out.append(Notification.from_entry(shard, entry_id, fields))
            except MalformedEntry as exc:
                await self._dead_letter_unreadable(shard, entry_id, fields, exc)
        return out

    async def _dead_letter_unreadable(
        self, shard: int, entry_id: str, fields: dict[str, str], exc: MalformedEntry
    ) -> None:
        raw = [(_raw(f), _raw(v)) for f, v in fields.items()]  # as they were, bytes too
        await run(self.redis, dead_letter_call(shard, entry_id, f"malformed: {exc}", 1, raw))
        metrics.DEAD_LETTERED.labels("malformed").inc()
        log.warning(
            "dead-lettered an unreadable entry shard=%d entry=%s error=%s", shard, entry_id, exc
        )

    async def drain_own(self, shards: Sequence[int]) -> None:
        """Deliver what this consumer read and never acknowledged: before a restart, or
        when a failure (Redis away, the process paused) left a batch pending. Pages through
        the pending list, so held entries (not due yet) do not keep it reading the same."""
        for shard in shards:
            start = "0"
            while True:
                reply = await self._read_group({ShardKeys.of(shard).outbox: start}, None)
                entries = [e for _, entries in _stream_items(reply) for e in entries]
                batch = await self._parse(shard, entries)
                await self.pipeline.submit(batch, Origin.PENDING)
                await self._wait_room()
                if len(entries) < READ_COUNT:
                    break
                start = entries[-1][0]

    async def claim(self, shards: Sequence[int], min_idle_ms: int | None = None) -> int:
        """Take over entries idle past `min_idle_ms` (DELIVERY_TIMEOUT_MS by default), from
        any consumer of any pod."""
        idle = self.settings.delivery_timeout_ms if min_idle_ms is None else min_idle_ms
        claimed = 0
        for shard in shards:
            start = "0-0"
            while True:
                start, entries, _deleted = await self.redis.xautoclaim(
                    ShardKeys.of(shard).outbox,
                    CONSUMER_GROUP,
                    self.consumer,
                    min_idle_time=idle,
                    start_id=start,
                    count=READ_COUNT,
                )
                batch = await self._parse(shard, entries)
                await self.pipeline.submit(batch, Origin.PENDING)
                claimed += len(batch)
                if start == "0-0":
                    break
        if claimed:
            log.info("claimed idle entries count=%d consumer=%s", claimed, self.consumer)
        return claimed

    async def close(self) -> None:
        await self.pipeline.close()


def _raw(text: str) -> bytes:
    """A value as Redis held it (read with surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


def _stream_items(reply: Any) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """XREADGROUP's (RESP2) reply as (stream, entries); None when BLOCK timed out."""
    return [(name, entries) for name, entries in reply or []]
