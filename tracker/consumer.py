"""The consumer role (phase 2): deliver the notifications of this process's shards."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

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
    deliverer: Deliverer,
    settings: Settings,
    shards: Callable[[], list[int]],
    stop: asyncio.Event,
    *,
    role: str = "consumer",
    block_ms: int = BLOCK_MS,
    claim_idle_ms: int | None = None,
) -> None:
    """Deliver the current shards until told to stop: for each shard newly in the set,
    create its group and redeliver this consumer's own pending entries first; then read,
    and every quarter of `claim_idle_ms` (DELIVERY_TIMEOUT_MS by default) claim entries left
    idle that long by any dead consumer."""
    claim_idle_ms = claim_idle_ms or settings.delivery_timeout_ms
    known: set[int] = set()
    next_claim = 0.0
    while not stop.is_set():
        current = shards()
        try:
            for shard in sorted(set(current) - known):
                await deliverer.ensure_group(shard)
                await deliverer.drain_own([shard])
                await deliverer.claim([shard], claim_idle_ms)  # a dead reader's entries
                known.add(shard)
            known &= set(current)
            if not current:
                await asyncio.sleep(block_ms / 1000)
                continue
            await deliverer.read(current, block_ms=block_ms, own=False)
            if time.monotonic() >= next_claim:
                await deliverer.claim(current, claim_idle_ms)
                next_claim = time.monotonic() + claim_idle_ms / 4000
        except UNAVAILABLE as exc:  # first: ClusterDownError is also a ResponseError
            metrics.REDIS_ERRORS.labels(role).inc()
            log.warning("redis unavailable, backing off role=%s error=%s", role, exc)
            await asyncio.sleep(1.0)
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            await deliverer.recreate_group(current)


async def main(settings: Settings, index: int, stop: asyncio.Event) -> None:
    shards = settings.shards_of_consumer(index)
    redis = connect(settings)
    name = f"{settings.pod_id}-{index}"
    deliverer = Deliverer(redis, settings, Scripts(), build_sinks(settings, redis), name)
    # One blocking read spans every shard, except on Redis Cluster: one loop per shard there.
    groups = [[s] for s in shards] if is_cluster(redis) else [shards]
    log.info("consumer started name=%s shards=%s", name, shards)
    try:
        await asyncio.gather(
            *(serve(deliverer, settings, functools.partial(list, g), stop) for g in groups)
        )
    finally:
        await deliverer.close()
        await redis.aclose()
        log.info("consumer stopped name=%s", name)
