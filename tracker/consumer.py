"""The consumer role (phase 2): deliver the notifications of this process's shards."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import ResponseError

from tracker import metrics
from tracker.connection import UNAVAILABLE, connect, is_cluster
from tracker.delivery import Deliverer, is_nogroup
from tracker.scripts import Scripts
from tracker.settings import Settings
from tracker.sinks import build_sinks

log = logging.getLogger(__name__)

BLOCK_MS = 1000


async def serve(
    deliverer: Deliverer, settings: Settings, shards: list[int], stop: asyncio.Event
) -> None:
    """Drain own pending entries, then read, deliver and claim until told to stop."""
    started = False
    next_claim = 0.0
    while not stop.is_set():
        try:
            if not started:
                for shard in shards:
                    await deliverer.ensure_group(shard)
                await deliverer.drain_own(shards)
                started = True
            await deliverer.read(shards, block_ms=BLOCK_MS, own=False)
            if time.monotonic() >= next_claim:
                await deliverer.claim(shards)
                next_claim = time.monotonic() + settings.delivery_timeout_ms / 4000
        except UNAVAILABLE as exc:  # first: ClusterDownError is also a ResponseError
            metrics.REDIS_ERRORS.labels("consumer").inc()
            log.warning("redis unavailable, backing off error=%s", exc)
            await asyncio.sleep(1.0)
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            await deliverer.recreate_group(shards)


async def main(settings: Settings, index: int, stop: asyncio.Event) -> None:
    shards = settings.shards_of_consumer(index)
    redis = connect(settings)
    name = f"{settings.pod_id}-{index}"
    deliverer = Deliverer(redis, settings, Scripts(), build_sinks(settings, redis), name)
    # One blocking read spans every shard, except on Redis Cluster: one loop per shard there.
    groups = [[s] for s in shards] if is_cluster(redis) else [shards]
    log.info("consumer started name=%s shards=%s", name, shards)
    try:
        await asyncio.gather(*(serve(deliverer, settings, g, stop) for g in groups))
    finally:
        await deliverer.close()
        await redis.aclose()
        log.info("consumer stopped name=%s", name)
