"""`tracker reshard --to N`: change the shard count of a live system, while the pods run.

1. The layout in Redis becomes ``count=N, previous=old`` with a new epoch; every shard of
   both layouts is fenced to that epoch, so no process writes by the old layout any more
   (the write scripts refuse it; the writer reloads the layout and routes again).
2. Every process follows within a second: writers move a conversation before they touch
   it, sweepers lead the shards of both layouts, consumers read both layouts' streams.
3. This command waits until every shard has a lease holder and the consumers had time to
   read every stream, then moves every conversation whose shard changes
   (tracker/moves.py), shard by shard, until a pass finds none left.
4. When the count shrinks, the shards that go away are drained (every entry of their
   streams delivered), their counters and dead letters folded into the shards that stay.
5. The layout is settled (``previous`` cleared); the keys of removed shards are deleted.

Every step can be run again: a reshard that stopped half-way is resumed by the same command.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

from tracker.delivery.loop import BLOCK_MS
from tracker.delivery.notification import Entries
from tracker.redis.connection import Client
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys
from tracker.settings import Settings
from tracker.state.layout import REFRESH_S, Layout, fence, read_layout, set_layout
from tracker.state.moves import move

SCAN_COUNT = 1000
# Every process follows a new layout within this: a consumer reloads it within REFRESH_S,
# after the blocking read in hand (BLOCK_MS). The reshard waits it before moving (so the
# consumers read the new streams) and before deleting removed shards' keys.
SETTLE_S = 2 * REFRESH_S + BLOCK_MS / 1000
PASSES = 5
POLL_S = 0.2

Out = Callable[[str], None]


def _say(line: str) -> None:
    print(f"reshard: {line}", flush=True)


class Resharder:
    def __init__(
        self,
        redis: Client,
        settings: Settings,
        *,
        drain_timeout_s: float = 300.0,
        leader_wait_s: float | None = None,
        settle_s: float = SETTLE_S,
        out: Out = _say,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.drain_timeout_s = drain_timeout_s
        # a few lease TTLs: the time sweepers take to notice the new shards and lead them
        self.leader_wait_s = (
            3 * settings.leader_ttl_ms / 1000 + 10 if leader_wait_s is None else leader_wait_s
        )
        self.settle_s = settle_s
        self.out = out

    async def run(self, to: int) -> int:
        """Reshard to `to` shards (or finish the reshard in progress); 0 when done."""
        layout = await read_layout(self.redis, self.settings.shard_count)
        if layout.previous is not None and layout.count != to:
            self.out(
                f"a reshard from {layout.previous} to {layout.count} shards is in progress:"
                f" finish it first (tracker reshard --to {layout.count})"
            )
            return 1
        if layout.previous is None:
            if layout.count == to:
                self.out(f"the layout already has {to} shards")
                return 0
            started = Layout(to, layout.count, layout.epoch + 1)
            if not await self._set(layout, started):
                self.out("the layout changed meanwhile: run the command again")
                return 1
            layout = started
            self.out(f"{layout.previous} -> {layout.count} shards, epoch {layout.epoch}")
        else:
            self.out(f"resuming {layout.previous} -> {layout.count} shards, epoch {layout.epoch}")
        if not await self._fence(layout):
            self.out("a newer layout exists: another reshard took over")
            return 1
        await self._await_leaders(layout)
        if self.settle_s:  # consumers follow the layout too: let them read the new streams
            self.out(f"waiting {self.settle_s:.1f}s for consumers to read every shard")
            await asyncio.sleep(self.settle_s)
        moved = await self._move_all(layout)
        self.out(f"moved {moved} conversations")
        removed = range(layout.count, layout.span)
        if removed:
            if not await self._drain(removed):
                self.out("streams of the removed shards not drained: run the command again")
                return 1
            await self._fold(removed, layout.count)
        if not await self._set(layout, Layout(layout.count, None, layout.epoch)):
            self.out("the layout changed meanwhile: run the command again")
            return 1
        if removed:
            await asyncio.sleep(self.settle_s)  # every process has dropped those shards
            await self._delete(removed)
        self.out(f"done: {layout.count} shards")
        return 0

    async def _set(self, read: Layout, new: Layout) -> bool:
        return await set_layout(self.redis, read, new)

    async def _fence(self, layout: Layout) -> bool:
        return await fence(self.redis, layout)

    async def _await_leaders(self, layout: Layout) -> None:
        """Wait (a few lease TTLs at most) until a sweeper leads every shard, so that the
        conversations moved into a new shard fire on time."""
        deadline = time.monotonic() + self.leader_wait_s
        while True:
            async with self.redis.pipeline(transaction=False) as pipe:
                for shard in layout.shards():
                    pipe.exists(ShardKeys.of(shard).leader)
                led = await pipe.execute()
            missing = [s for s, n in zip(layout.shards(), led, strict=True) if not n]
            if not missing:
                self.out(f"every one of the {layout.span} shards has a leader")
                return
            if time.monotonic() > deadline:
                self.out(f"no sweeper leads shards {missing}: moving anyway, they fire once led")
                return
            await asyncio.sleep(POLL_S)

    async def _move_all(self, layout: Layout) -> int:
        """Move every conversation whose shard changes: passes until one finds none."""
        assert layout.previous is not None
        total = 0
        for _ in range(PASSES):
            found = 0
            for source in range(layout.previous):
                k = ShardKeys.of(source)
                leftovers = cast(list[str], await self.redis.hkeys(k.moving))  # interrupted moves
                total += await move(self.redis, layout, leftovers)
                found += len(leftovers)
                cursor = 0
                while True:
                    cursor, ids = await self.redis.hscan(k.records, cursor, count=SCAN_COUNT)
                    misplaced = [str(c) for c in ids if layout.source(str(c)) == source]
                    found += len(misplaced)
                    total += await move(self.redis, layout, misplaced)
                    if not cursor:
                        break
            if not found:
                return total
            self.out(f"pass: {found} conversations to move, {total} moved so far")
        raise RuntimeError("conversations kept appearing in their old shards")

    async def _drain(self, removed: range) -> bool:
        """Wait until every entry of the removed shards' streams is delivered."""
        deadline = time.monotonic() + self.drain_timeout_s
        left = list(removed)
        while left:
            left = [s for s in left if not await self._drained(ShardKeys.of(s).outbox)]
            if not left:
                break
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_S)
        self.out(f"streams of shards {removed.start}..{removed.stop - 1} drained")
        return True

    async def _drained(self, stream: str) -> bool:
        if not await self.redis.exists(stream) or not await self.redis.xlen(stream):
            return True
        info = await self.redis.xinfo_stream(stream)
        groups = await self.redis.xinfo_groups(stream)
        group = next((g for g in groups if g["name"] == CONSUMER_GROUP), None)
        return (
            group is not None
            and int(group["pending"]) == 0
            and group["last-delivered-id"] == info["last-generated-id"]
        )

    async def _fold(self, removed: range, count: int) -> None:
        """Add the removed shards' counters and dead letters to the shards that stay."""
        for shard in removed:
            source, target = ShardKeys.of(shard), ShardKeys.of(shard % count)
            counters = await self.redis.hgetall(source.counters)
            for field, value in counters.items():
                await self.redis.hincrby(target.counters, field, int(value))
            await self.redis.delete(source.counters)
            while entries := cast(Entries, await self.redis.xrange(source.dead_letters, count=100)):
                for entry_id, fields in entries:
                    await self.redis.xadd(target.dead_letters, cast(Any, fields))
                    await self.redis.xdel(source.dead_letters, entry_id)

    async def _delete(self, removed: range) -> None:
        """Delete the data keys of removed shards (lease fencing and epoch keys stay, so
        that their numbers only grow if the shard comes back)."""
        for shard in removed:
            k = ShardKeys.of(shard)
            keys = (k.waiting, k.fired, k.records, k.retired, k.moving, k.outbox, k.attempts)
            for key in (*keys, k.history):
                await self.redis.delete(key)
