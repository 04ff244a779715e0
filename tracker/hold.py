"""Notifications a consumer read before their due time, kept until it comes.

The sweeper stages a level up to PREFETCH_MS before it is due, so that a burst of deadlines
is read and parsed ahead of time; at the due time only the re-check, the send and the
acknowledgement remain. Due times are on Redis's clock: the hold keeps an estimate of how
far this process's clock is behind it, from readings that can only be low (each is taken
after its reply arrived), so a notification is released a little late, never early; the
re-check script confirms the due time on Redis's clock anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from typing import NamedTuple

from tracker.events import Notification

#: Notifications held by one process at most; the reader waits for room beyond it.
MAX_HELD = 50_000
#: How long a reading of Redis's clock counts towards the offset estimate, seconds.
CLOCK_WINDOW_S = 30.0


class Held(NamedTuple):
    notification: Notification
    retried: bool
    just_read_pending: bool


class Hold:
    def __init__(self, capacity: int = MAX_HELD) -> None:
        self.capacity = capacity
        self.offset_ms = 0.0  # Redis's clock minus this process's
        self._best = self._previous_best = -math.inf  # readings of this and the last window
        self._window_ends = 0.0
        self._heap: list[tuple[int, int, Held]] = []
        # held, or taken and not settled yet: how many times (a re-hold while taken: twice)
        self._keys: dict[tuple[int, str], int] = {}
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._heap)

    def now_ms(self) -> float:
        """Redis's clock as this process estimates it."""
        return time.time() * 1000 + self.offset_ms

    def observe_clock(self, redis_now_ms: int) -> None:
        """Learn the offset from a reply carrying Redis's clock, just received.

        Each reading is low by however long the reply took to arrive and be read, which
        under load is tens of milliseconds: the estimate is the highest reading of the last
        one to two CLOCK_WINDOW_S, which follows a clock that is stepped back, too.
        """
        reading = redis_now_ms - time.time() * 1000
        now = time.monotonic()
        if now >= self._window_ends:
            self._previous_best, self._best = self._best, -math.inf
            self._window_ends = now + CLOCK_WINDOW_S
        self._best = max(self._best, reading)
        self.offset_ms = max(self._best, self._previous_best)

    def holds(self, n: Notification) -> bool:
        return (n.shard, n.entry_id) in self._keys

    def add(self, item: Held, *, again: bool = False) -> None:
        """Hold a notification until due. One read again (the own pending list, a claim of
        this process's own idle entries) while held or being handled is dropped: sent once.
        `again`: one taken from here that turned out not due yet."""
        n = item.notification
        key = (n.shard, n.entry_id)
        if key in self._keys and not again:
            return
        self._keys[key] = self._keys.get(key, 0) + 1
        first = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (n.due_at_ms, next(self._order), item))
        if first is None or n.due_at_ms < first:
            self._changed.set()
        if len(self._heap) >= self.capacity:
            self._room.clear()

    def take_due(self) -> list[Held]:
        """Everything due by now, earliest first; `settle` them once handled."""
        now = self.now_ms()
        out: list[Held] = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        if len(self._heap) < self.capacity:
            self._room.set()
        return out

    async def wait_due(self) -> None:
        """Sleep until the earliest notification is due, or an earlier one is added."""
        self._changed.clear()
        delay = (self._heap[0][0] - self.now_ms()) / 1000 if self._heap else 3600.0
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

    async def wait_room(self) -> None:
        await self._room.wait()

    def latest_due_ms(self) -> float:
        return max((due for due, _, _ in self._heap), default=0.0)
