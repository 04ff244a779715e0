"""The consumer role (phase 2): deliver the notifications of this process's shards."""

from __future__ import annotations

import asyncio
import logging

from tracker.delivery.loop import serve, serve_per_shard
from tracker.delivery.pipeline import Pipeline
from tracker.delivery.reader import StreamReader
from tracker.delivery.sinks import build_sinks
from tracker.pod.heartbeat import Heartbeat
from tracker.redis.cluster import is_cluster
from tracker.redis.connection import close, connect
from tracker.settings import Settings
from tracker.state.layout import LiveLayout

log = logging.getLogger(__name__)


async def main(settings: Settings, index: int, stop: asyncio.Event) -> None:
    redis = connect(settings)
    name = f"{settings.pod_id}-{index}"
    layout = LiveLayout(redis, settings)
    pipeline = Pipeline(redis, settings, build_sinks(settings, redis), name, layout)
    reader = StreamReader(pipeline, name)
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
            await serve_per_shard(reader, settings, mine, stop, heartbeat)
        else:  # one blocking read spans every shard
            await serve(reader, settings, mine, stop, heartbeat)
    finally:
        if follow is not None:
            follow.cancel()
        await reader.close()
        await close(redis)
        heartbeat.clear()
        log.info("consumer stopped name=%s", name)
