"""The shard layout: how many shards there are, and while a reshard runs, how many there were.

Redis holds the live layout (``timeout:shards``); ``SHARD_COUNT`` only seeds it on first
use. Every process routes by its copy and reloads it every second. Each change of layout
gets a new epoch, and the write scripts refuse a caller whose epoch is older than the one
its shard has seen (``EPOCH`` error): the caller reloads the layout and routes again, so no
process writes to a shard a reshard is emptying.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from tracker.redis.connection import Client
from tracker.redis.keys import LAYOUT, shard_of
from tracker.redis.replies import EpochRefused
from tracker.redis.scripts import Call, Script, run, run_each
from tracker.settings import Settings
from tracker.state.moves import take_out_call

log = logging.getLogger(__name__)

REFRESH_S = 1.0

SET_LAYOUT = Script.load("layout_set")


@dataclass(frozen=True, slots=True)
class Layout:
    count: int
    previous: int | None = None  # set while a reshard moves conversations from that count
    epoch: int = 0

    @classmethod
    def parse(cls, raw: Mapping[Any, Any]) -> Layout:
        previous = raw.get("previous")
        return cls(int(raw["count"]), int(previous) if previous else None, int(raw.get("epoch", 0)))

    def shard(self, conversation_id: str) -> int:
        """The shard a conversation is written to."""
        return shard_of(conversation_id, self.count)

    def source(self, conversation_id: str) -> int | None:
        """While a reshard runs: the shard the conversation may still sit in, when not its own."""
        if self.previous is None:
            return None
        old = shard_of(conversation_id, self.previous)
        return old if old != self.shard(conversation_id) else None

    @property
    def span(self) -> int:
        """Every shard that may hold data: both layouts' while a reshard runs."""
        return max(self.count, self.previous or 0)

    def shards(self) -> range:
        return range(self.span)

    def shards_of_consumer(self, index: int, processes: int) -> list[int]:
        """The shards consumer ``index`` of ``processes`` reads: its share of the hash space."""
        return [n for n in self.shards() if n % processes == index]


def set_layout_call(read: Layout, new: Layout) -> Call[bool]:
    """Compare-and-set the layout on the epoch read: False when it changed since."""
    previous = "" if new.previous is None else new.previous
    args = [read.epoch, new.count, previous, new.epoch]
    return Call(SET_LAYOUT, [LAYOUT], args, lambda reply: bool(int(reply)))


async def set_layout(redis: Client, read: Layout, new: Layout) -> bool:
    return await run(redis, set_layout_call(read, new))


async def fence(redis: Client, layout: Layout) -> bool:
    """Raise every shard's epoch to the layout's (a take-out of no conversations); False
    when a shard has seen a newer one."""
    calls = [take_out_call(shard, layout.epoch) for shard in layout.shards()]
    for reply in await run_each(redis, calls):
        if isinstance(reply, EpochRefused):
            return False
        if isinstance(reply, Exception):
            raise reply
    return True


async def read_layout(redis: Client, default_count: int) -> Layout:
    """The live layout; the first process to ask records ``default_count`` as the layout."""
    raw = await redis.hgetall(LAYOUT)
    if not raw:
        await redis.hsetnx(LAYOUT, "count", default_count)
        raw = await redis.hgetall(LAYOUT)
    return Layout.parse(raw)


class LiveLayout:
    """A process's copy of the layout, loaded before first use and followed from then on."""

    def __init__(self, redis: Client, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.current = Layout(settings.shard_count)
        self.loaded = False

    async def get(self) -> Layout:
        """The layout, loading it from Redis the first time."""
        if not self.loaded:
            await self.refresh()
        return self.current

    async def refresh(self) -> Layout:
        layout = await read_layout(self.redis, self.settings.shard_count)
        if not self.loaded and layout.count != self.settings.shard_count:
            log.warning(
                "SHARD_COUNT=%d differs from the live layout: using %d shards (tracker reshard)",
                self.settings.shard_count,
                layout.count,
            )
        if self.loaded and layout != self.current:
            log.info(
                "shard layout changed count=%d previous=%s epoch=%d",
                layout.count,
                layout.previous,
                layout.epoch,
            )
        self.current, self.loaded = layout, True
        return layout

    async def catch_up(self, epoch: int) -> Layout:
        """Reload the layout after a shard refused it, naming `epoch`. A layout in Redis
        older than a shard's epoch was lost with Redis's data (a FLUSHDB, a restart without
        persistence) and seeded again at epoch 0, while writers still routing by the lost
        one raised shards above it: then the layout is raised above `epoch` and every shard
        fenced to it, so that every writer converges on it instead of being refused for good.
        """
        layout = await self.refresh()
        if layout.epoch >= epoch:
            return layout
        raised = Layout(layout.count, layout.previous, epoch + 1)
        if await set_layout(self.redis, layout, raised):
            log.warning(
                "shard layout epoch %d below a shard's %d (Redis lost data): raised to %d",
                layout.epoch,
                epoch,
                raised.epoch,
            )
            await fence(self.redis, raised)
        return await self.refresh()

    async def follow(self) -> None:
        """Reload the layout every REFRESH_S until cancelled (the caller loads it first);
        Redis errors only delay it."""
        task = asyncio.current_task()
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh()
            except RedisError as exc:
                log.debug("layout refresh failed error=%s", exc)
            # redis-py can absorb a cancellation that lands while it connects: honour it
            if task is not None and task.cancelling():
                raise asyncio.CancelledError

    async def wait_loaded(self, stop: asyncio.Event) -> None:
        """Load the layout before first use, retrying while Redis is unreachable."""
        while not self.loaded and not stop.is_set():
            try:
                await self.refresh()
            except RedisError as exc:
                log.warning("shard layout not loaded yet, retrying error=%s", exc)
                await asyncio.sleep(REFRESH_S)
