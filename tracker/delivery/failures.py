"""When a sink does not take a notification: count the attempt, try again after a backoff
with jitter, or give up and dead-letter it (MAX_DELIVERIES attempts, or a permanent error).
A sink's `Deferred` (Redis full, the webhook's breaker open) costs no attempt: the
notification waits and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from redis.exceptions import RedisError

from tracker import metrics
from tracker.delivery.hold import Origin
from tracker.delivery.ledger import attempt_failed_call, dead_letter_notification
from tracker.delivery.notification import Notification
from tracker.delivery.sinks import Deferred
from tracker.errors import DeliveryError
from tracker.redis.connection import Client
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys
from tracker.redis.scripts import run
from tracker.settings import Settings

log = logging.getLogger(__name__)

#: At most this much of a sink's error text is kept (attempts hash, history, dead letter).
ERROR_TEXT = 200

Redeliver = Callable[[Sequence[Notification], Origin], Awaitable[None]]


def one_line(text: str) -> str:
    """An error text as the history and the attempts hash keep it: one line, no '|'."""
    return text.replace("\n", " ").replace("|", "/")[:ERROR_TEXT]


class UnexpectedError(DeliveryError):
    """A sink raised what it should have reported: the entry is dead-lettered at once."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(f"{type(exc).__name__}: {exc}", permanent=True)


class Failures:
    def __init__(
        self,
        redis: Client,
        settings: Settings,
        consumer: str,
        redeliver: Redeliver,
        left_pending: Callable[[], None],
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.consumer = consumer
        self.redeliver = redeliver  # the pipeline's handle
        self.left_pending = left_pending  # a retry failed on Redis: the entry stays pending
        self.retries: set[asyncio.Task[None]] = set()
        self.retrying: set[tuple[int, str]] = set()  # entries waiting for a retry
        self.retry_cap_s = min(30.0, settings.delivery_timeout_ms / 2000)

    def waiting(self, n: Notification) -> bool:
        return (n.shard, n.entry_id) in self.retrying

    async def failed(self, n: Notification, sink: str, error: DeliveryError) -> None:
        if isinstance(error, Deferred):  # not attempted: no attempt counted
            self._schedule(n, min(self.retry_cap_s, error.retry_after_s), error.until)
            return
        attempts = await run(self.redis, attempt_failed_call(n, sink, one_line(str(error))))
        if error.permanent or attempts >= self.settings.max_deliveries:
            if isinstance(error, UnexpectedError):
                reason = "unexpected"
            else:
                reason = "permanent" if error.permanent else "max_deliveries"
            await self.dead_letter(n, f"{reason}: {one_line(str(error))}", attempts)
            metrics.DEAD_LETTERED.labels(reason).inc()
            log.warning(
                "dead-lettered event_id=%s conversation=%s attempts=%d error=%s",
                n.event_id,
                n.conversation_id,
                attempts,
                error,
            )
            return
        delay = random.uniform(
            0, min(self.retry_cap_s, self.settings.retry_base_ms / 1000 * 2**attempts)
        )
        log.info(
            "delivery failed event_id=%s attempt=%d retry_in=%.2fs error=%s",
            n.event_id,
            attempts,
            delay,
            error,
        )
        self._schedule(n, delay)

    async def dead_letter(self, n: Notification, reason: str, attempts: int) -> None:
        await run(self.redis, dead_letter_notification(n, reason, attempts))

    def _schedule(self, n: Notification, delay: float, until: asyncio.Event | None = None) -> None:
        """Try `n` again after `delay`, or as soon as `until` is set."""
        self.retrying.add((n.shard, n.entry_id))
        task = asyncio.create_task(self._retry(n, delay, until))
        self.retries.add(task)
        task.add_done_callback(self.retries.discard)

    async def _retry(self, n: Notification, delay: float, until: asyncio.Event | None) -> None:
        try:
            if until is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(until.wait(), delay)
            # Keep the entry ours (resets its idle time); nothing back means another consumer
            # settled it meanwhile (it was claimed from this one): it is not sent again.
            claimed = await self.redis.xclaim(
                ShardKeys.of(n.shard).outbox,
                CONSUMER_GROUP,
                self.consumer,
                0,
                [n.entry_id],
                justid=True,
            )
            self.retrying.discard((n.shard, n.entry_id))
            if claimed:
                await self.redeliver([n], Origin.PENDING)
            else:
                metrics.SUPPRESSED.labels("duplicate").inc()
        except RedisError as exc:  # still pending: the read loop reads it again
            self.left_pending()
            log.warning("retry failed event_id=%s error=%s", n.event_id, exc)
        finally:
            self.retrying.discard((n.shard, n.entry_id))

    async def close(self) -> None:
        for task in list(self.retries):
            task.cancel()
        await asyncio.gather(*self.retries, return_exceptions=True)
