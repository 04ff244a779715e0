"""Notifications a consumer read before their due time, kept until it comes.

The sweeper stages a level up to PREFETCH_MS before it is due, so that a burst of deadlines
is read and parsed ahead of time; at the due time only the re-check, the send and the
acknowledgement remain. Due times are on Redis's clock, which the hold estimates from
readings that can only be low (tracker/clock.py), so a notification is released a little
late, never early; the re-check script confirms the due time on Redis's clock anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from enum import Enum
from typing import NamedTuple

from tracker.delivery.notification import Notification
from tracker.redis.clock import RedisClock

#: Notifications held by one process at most; the reader waits for room beyond it.
MAX_HELD = 50_000


class Origin(Enum):
    """Where the delivery found a notification."""

    #: Read from its outbox for the first time: no attempt was made yet.
    NEW = "new"
    #: Read again from a pending list (this consumer's own after a restart or a failure,
    #: one claimed from a dead consumer, or one this consumer retries): ours now, and it
    #: may have failed attempts to forget.
    PENDING = "pending"


class Held(NamedTuple):
    notification: Notification
    origin: Origin


class Hold:
    def __init__(self, capacity: int = MAX_HELD) -> None:
        self.capacity = capacity
        self.clock = RedisClock()
        self._heap: list[tuple[int, int, Held]] = []
        # held, or taken and not settled yet: how many times (a re-hold while taken: twice)
        self._keys: dict[tuple[int, str], int] = {}
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._heap)

    def holds(self, n: Notification) -> bool:
        return (n.shard, n.entry_id) in self._keys

    def add(self, item: Held) -> None:
        """Hold a notification until due (a caller that reads an entry checks `holds` first:
        one read again while held or being handled is sent once)."""
        n = item.notification
        key = (n.shard, n.entry_id)
        self._keys[key] = self._keys.get(key, 0) + 1
        first = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (n.due_at_ms, next(self._order), item))
        if first is None or n.due_at_ms < first:
            self._changed.set()
        if len(self._heap) >= self.capacity:
            self._room.clear()

    def take_due(self) -> list[Held]:
        """Everything due by now, earliest first; `settle` them once handled."""
        now = self.clock.now_ms()
        out: list[Held] = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        if len(self._heap) < self.capacity:
            self._room.set()
        return out

    async def wait_due(self) -> None:
        """Sleep until the earliest notification is due, or an earlier one is added."""
        self._changed.clear()
        delay = (self._heap[0][0] - self.clock.now_ms()) / 1000 if self._heap else 3600.0
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), delay)

    def settle(self, items: list[Held]) -> None:
        """Forget handled notifications (sent, stale, or left pending after a failure)."""
        for item in items:
            key = (item.notification.shard, item.notification.entry_id)
            left = self._keys.pop(key, 1) - 1
            if left:
                self._keys[key] = left

    def wake(self) -> None:
        """Cut a `wait_due` short."""
        self._changed.set()

    def has_room(self) -> bool:
        return self._room.is_set()

    async def wait_room(self) -> None:
        await self._room.wait()

    def latest_due_ms(self) -> float:
        return max((due for due, _, _ in self._heap), default=0.0)
