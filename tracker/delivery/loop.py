"""The read loop: what a consumer process runs (phase 2) and, for the shards it leads, the
lease holder (phase 1)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from tracker.delivery.pipeline import STREAM_GONE
from tracker.delivery.reader import StreamReader
from tracker.pod.heartbeat import Heartbeat
from tracker.redis.backoff import Backoff, report
from tracker.settings import Settings
from tracker.state.layout import REFRESH_S

#: How long one read blocks waiting for new entries.
BLOCK_MS = 1000


async def serve(
    reader: StreamReader,
    settings: Settings,
    shards: Callable[[], list[int]],
    stop: asyncio.Event,
    heartbeat: Heartbeat,
    *,
    role: str = "consumer",
    block_ms: int = BLOCK_MS,
    claim_idle_ms: int | None = None,
) -> None:
    """Deliver the current shards until told to stop: for each shard newly in the set,
    create its group and redeliver this consumer's own pending entries first; then read,
    and every quarter of `claim_idle_ms` (DELIVERY_TIMEOUT_MS by default) claim entries left
    idle that long by any dead consumer. A Redis error is backed off from; what it left
    pending (a batch read or held when it struck) is read again as soon as Redis answers."""
    claim_idle_ms = claim_idle_ms or settings.delivery_timeout_ms
    pipeline = reader.pipeline
    reader.heartbeat = heartbeat
    known: set[int] = set()
    next_claim = 0.0
    backoff = Backoff()
    recreate = False
    left_pending_seen = pipeline.left_pending
    while not stop.is_set():
        pipeline.check_releaser()
        current = shards()
        try:
            if recreate:
                await reader.recreate_group(current)
                recreate = False
            if current and not known:
                await reader.sync_clock()
            if pipeline.left_pending != left_pending_seen:  # a failure left entries pending
                left_pending_seen = pipeline.left_pending
                await reader.drain_own(sorted(known & set(current)))
            for shard in sorted(set(current) - known):
                await reader.ensure_group(shard)
                await reader.drain_own([shard])
                await reader.claim([shard], claim_idle_ms)  # a dead reader's entries
                known.add(shard)
            known &= set(current)
            if not current:
                heartbeat.progress()
                await asyncio.sleep(block_ms / 1000)
                continue
            await reader.read(current, block_ms=block_ms)
            if time.monotonic() >= next_claim:
                await reader.claim(current, claim_idle_ms)
                next_claim = time.monotonic() + claim_idle_ms / 4000
            heartbeat.progress()
            backoff.reset()
        except STREAM_GONE:
            recreate = True
        except RedisError as exc:
            pipeline.left_pending += 1  # what it read or held when this struck stays pending
            report(role, exc, heartbeat)
            await backoff.wait(stop)


async def serve_per_shard(
    reader: StreamReader,
    settings: Settings,
    shards: Callable[[], list[int]],
    stop: asyncio.Event,
    heartbeat: Heartbeat,
) -> None:
    """On Redis Cluster, one read loop per shard (a blocking read stays on one node), started
    and stopped as the shard layout changes."""
    loops: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}
    try:
        while not stop.is_set():
            for task, _ in loops.values():
                if task.done():
                    task.result()  # a loop that failed takes the process down: restarted
            wanted = set(shards())
            for shard in wanted - loops.keys():
                done = asyncio.Event()
                task = asyncio.create_task(
                    serve(reader, settings, functools.partial(list, [shard]), done, heartbeat)
                )
                loops[shard] = (task, done)
            for shard in loops.keys() - wanted:
                task, done = loops.pop(shard)
                done.set()
                await task
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_S)
    finally:
        for _, done in loops.values():
            done.set()
        await asyncio.gather(*(task for task, _ in loops.values()), return_exceptions=True)
