"""Helpers of the delivery tests: sweep a shard once as its lease holder would, and a stream
reader with its pipeline, as a consumer process builds them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from tracker.delivery.pipeline import Pipeline
from tracker.delivery.reader import StreamReader
from tracker.delivery.sinks import Sink
from tracker.redis.connection import Client
from tracker.redis.scripts import run
from tracker.settings import Settings
from tracker.timing.lease import acquire_call
from tracker.timing.sweeper import Swept, sweep_call


async def take_lease(redis: Client, shard: int = 0, pod: str = "p") -> str:
    lease = await run(redis, acquire_call(shard, pod, 10_000))
    assert lease is not None, f"shard {shard}'s lease is held by another pod"
    return lease


async def sweep_once(
    redis: Client, settings: Settings, shard: int = 0, *, prefetch_ms: int = 0, batch: int = 100
) -> Swept:
    """Sweep `shard` once (taking its lease first, as pod "p"): what is due, and with
    `prefetch_ms` what is due that soon, goes to its outbox."""
    lease = await take_lease(redis, shard)
    policy = dataclasses.replace(settings, prefetch_ms=prefetch_ms)
    return await run(redis, sweep_call(shard, lease, policy, batch))


async def reader(
    redis: Client, settings: Settings, sinks: Sequence[Sink], consumer: str = "consumer-test"
) -> StreamReader:
    """A reader of shard 0 (its group created) feeding a pipeline to `sinks`."""
    r = StreamReader(Pipeline(redis, settings, sinks, consumer), consumer)
    await r.ensure_group(0)
    return r
