"""How a role loop lives through Redis errors: count, report, wait a little longer each time,
and carry on. No reply from Redis stops a role (an outage, OOM, LOADING, READONLY, a script
error); only an unexpected exception, a bug of ours, does."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from tracker import metrics
from tracker.pod.heartbeat import Heartbeat
from tracker.redis.connection import error_kind

log = logging.getLogger(__name__)

FIRST_S = 0.05
CAP_S = 1.0


class Backoff:
    """Waits between attempts while Redis keeps failing: FIRST_S, doubling up to CAP_S;
    back to FIRST_S after a success."""

    def __init__(self, first_s: float = FIRST_S, cap_s: float = CAP_S) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.next_s = first_s

    def reset(self) -> None:
        self.next_s = self.first_s

    async def wait(self, stop: asyncio.Event) -> None:
        """Sleep the current delay (cut short by `stop`), then lengthen it."""
        delay, self.next_s = self.next_s, min(self.cap_s, self.next_s * 2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


def report(role: str, exc: RedisError, heartbeat: Heartbeat | None = None) -> None:
    """Count a Redis error a role backs off from, log it, and show it in the role's file."""
    kind = error_kind(exc)
    metrics.REDIS_ERRORS.labels(role, kind).inc()
    if heartbeat is not None:
        heartbeat.failed(kind, str(exc))
    log.warning("redis error, backing off role=%s kind=%s error=%s", role, kind, exc)
