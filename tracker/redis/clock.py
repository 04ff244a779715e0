"""Redis's clock as one process estimates it: deadlines are on Redis's clock, and a pod's
own clock may be off by any amount.

Each reading (a TIME, or a script's reply carrying Redis's time) is taken after its reply
arrived, so it is low by the reply's delay, which under load is tens of milliseconds. The
estimate is the highest reading of the last one to two WINDOW_S: close to the true offset,
never above it, and it follows a clock that is stepped back.
"""

from __future__ import annotations

import math
import time

#: How long a reading counts towards the estimate, seconds.
WINDOW_S = 30.0


class RedisClock:
    def __init__(self) -> None:
        self.offset_ms = 0.0  # Redis's clock minus this process's
        self._best = self._previous_best = -math.inf  # readings of this and the last window
        self._window_ends = 0.0

    def now_ms(self) -> float:
        return time.time() * 1000 + self.offset_ms

    def observe(self, redis_now_ms: int) -> None:
        """Learn from Redis's clock as a reply just received gave it."""
        reading = redis_now_ms - time.time() * 1000
        now = time.monotonic()
        if now >= self._window_ends:
            self._previous_best, self._best = self._best, -math.inf
            self._window_ends = now + WINDOW_S
        self._best = max(self._best, reading)
        self.offset_ms = max(self._best, self._previous_best)
