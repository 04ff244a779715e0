"""The consumer role (phase 2): deliver the notifications of this process's shards."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from tracker.delivery.pipeline import Deliverer, is_nogroup
from tracker.delivery.sinks import build_sinks
from tracker.pod.heartbeat import Heartbeat
from tracker.redis.backoff import Backoff, report
from tracker.redis.connection import connect, is_cluster
from tracker.redis.scripts import Scripts
from tracker.settings import Settings
from tracker.timing.layout import REFRESH_S, LiveLayout

log = logging.getLogger(__name__)

BLOCK_MS = 1000


async def serve(
    deliverer: Deliverer,
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
    deliverer.heartbeat = heartbeat
    known: set[int] = set()
    next_claim = 0.0
    backoff = Backoff()
    recreate = False
    failures_seen = deliverer.failures
    while not stop.is_set():
        deliverer.check_releaser()
        current = shards()
        try:
            if recreate:
                await deliverer.recreate_group(current)
                recreate = False
            if current and not known:
                await deliverer.sync_clock()
            if deliverer.failures != failures_seen:  # a failure left entries pending
                failures_seen = deliverer.failures
                await deliverer.drain_own(sorted(known & set(current)))
            for shard in sorted(set(current) - known):
                await deliverer.ensure_group(shard)
                await deliverer.drain_own([shard])
                await deliverer.claim([shard], claim_idle_ms)  # a dead reader's entries
                known.add(shard)
            known &= set(current)
            if not current:
                heartbeat.progress()
                await asyncio.sleep(block_ms / 1000)
                continue
            await deliverer.read(current, block_ms=block_ms)
            if time.monotonic() >= next_claim:
                await deliverer.claim(current, claim_idle_ms)
                next_claim = time.monotonic() + claim_idle_ms / 4000
            heartbeat.progress()
            backoff.reset()
        except RedisError as exc:
            if is_nogroup(exc):
                recreate = True
                continue
            deliverer.failures += 1  # what it read or held when this struck stays pending
            report(role, exc, heartbeat)
            await backoff.wait(stop)


async def main(settings: Settings, index: int, stop: asyncio.Event) -> None:
    redis = connect(settings)
    name = f"{settings.pod_id}-{index}"
    layout = LiveLayout(redis, settings)
    deliverer = Deliverer(redis, settings, Scripts(), build_sinks(settings, redis), name, layout)
    follow: asyncio.Task[None] | None = None

    def mine() -> list[int]:
        if not layout.loaded:
            return []
        return layout.current.shards_of_consumer(index, settings.consumer_processes)

    heartbeat = Heartbeat(settings, f"consumer-{index}")
    log.info("consumer started name=%s", name)
    try:
        await layout.wait_loaded(stop)  # so the shards' groups are created right at start
        follow = asyncio.create_task(layout.follow())
        if is_cluster(redis):
            await _per_shard(deliverer, settings, mine, stop, heartbeat)
        else:  # one blocking read spans every shard
            await serve(deliverer, settings, mine, stop, heartbeat)
    finally:
        if follow is not None:
            follow.cancel()
        await deliverer.close()
        await redis.aclose()
        heartbeat.clear()
        log.info("consumer stopped name=%s", name)


async def _per_shard(
    deliverer: Deliverer,
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
                    serve(deliverer, settings, functools.partial(list, [shard]), done, heartbeat)
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
