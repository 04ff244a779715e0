"""Where notifications go: the log, an outbound Redis stream, a signed HTTP webhook."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from redis.exceptions import RedisError

from tracker import metrics
from tracker.delivery.curl import CurlClient, CurlError
from tracker.delivery.notification import OUTBOUND, Outgoing
from tracker.delivery.signing import decode_secret, sign
from tracker.errors import DeliveryError
from tracker.redis.connection import Client, is_outage
from tracker.redis.scripts import Arg, Call, Script, run
from tracker.settings import Settings

log = logging.getLogger(__name__)

#: One outcome per notification: None when delivered.
Outcomes = list[DeliveryError | None]


class Sink(Protocol):
    name: str

    async def send(self, batch: Sequence[Outgoing]) -> Outcomes:
        """Deliver each notification; report each one's failure instead of raising."""
        ...

    async def close(self) -> None: ...


class LogSink:
    name = "log"

    async def send(self, batch: Sequence[Outgoing]) -> Outcomes:
        for item in batch:
            log.info("notification %s", item.body().decode())
        return [None] * len(batch)

    async def close(self) -> None:
        return None


NOTIFY_STREAM = Script.load("notify_stream")


def notify_stream_call(stream: str, maxlen: int, batch: Sequence[Outgoing]) -> Call[int]:
    """XADD each notification to the outbound `stream` (cap about `maxlen`): how many."""
    args: list[Arg] = [maxlen, *OUTBOUND]
    for item in batch:
        args += item.notification.outbound_values(item.fired_at)
    return Call(NOTIFY_STREAM, [stream], args, int)


class StreamSink:
    """XADD each notification to NOTIFY_STREAM (approximately capped): one script call a batch, so
    the client packs one command and parses one reply instead of one per notification."""

    name = "stream"

    def __init__(self, redis: Client, stream: str, maxlen: int) -> None:
        self.redis = redis
        self.stream = stream
        self.maxlen = maxlen

    async def send(self, batch: Sequence[Outgoing]) -> Outcomes:
        if not batch:
            return []
        try:
            await run(self.redis, notify_stream_call(self.stream, self.maxlen, batch))
        except RedisError as exc:
            if is_outage(exc):  # not the notifications' fault: they wait, no attempt spent
                return [Deferred(f"stream sink: {exc}", STREAM_RETRY_S)] * len(batch)
            return [DeliveryError(f"stream sink: {exc}")] * len(batch)
        return [None] * len(batch)

    async def close(self) -> None:
        return None


class Deferred(DeliveryError):
    """Not attempted: the entry stays pending, keeps its attempts, and comes back after
    `retry_after_s`, or as soon as `until` is set. Nothing is wrong with the notification; the way
    out is blocked for now."""

    def __init__(
        self, message: str, retry_after_s: float, until: asyncio.Event | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.until = until


class CircuitOpen(Deferred):
    """The webhook breaker is open: come back when it closes (or to probe it)."""

    def __init__(self, retry_after_s: float, closed: asyncio.Event | None = None) -> None:
        super().__init__("webhook: circuit open, not sent", retry_after_s, closed)


#: When a stream sink whose Redis refuses writes (down, OOM, read-only) tries again.
STREAM_RETRY_S = 1.0


CLOSED, HALF_OPEN, OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", HALF_OPEN: "half-open", OPEN: "open"}


#: The first cool-down of a breaker that opens; each failed probe doubles it, up to the
#: configured NOTIFY_WEBHOOK_BREAKER_COOLDOWN_MS. A receiver back after a blip of a few
#: seconds is tried again within about a second, one that stays down is left alone.
FIRST_COOLDOWN_S = 1.0


class Breaker:
    """Circuit breaker: ``failures`` failures in a row open it for a cool-down, which starts
    at FIRST_COOLDOWN_S (at most ``max_cooldown_s``) and doubles with each reopening, up to
    ``max_cooldown_s``; then one probe is let through (half-open): its success closes it
    (and the next opening starts from the first cool-down again), its failure reopens it.
    """

    def __init__(
        self, failures: int, max_cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = failures
        self.max_cooldown_s = max_cooldown_s
        self.first_cooldown_s = min(FIRST_COOLDOWN_S, max_cooldown_s)
        self.cooldown_s = self.first_cooldown_s
        self.clock = clock
        self.failures = 0
        self.state = CLOSED
        self.opened_at = 0.0
        # Set while closed: what the breaker turned away waits on it, so that everything
        # goes again the moment a probe succeeds, not a spread-out cool-down later.
        self.closed = asyncio.Event()
        self.closed.set()
        metrics.WEBHOOK_BREAKER_STATE.set(CLOSED)

    def allow(self) -> bool:
        """May a request go now? In half-open, only the first caller (the probe) may."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self.clock() - self.opened_at >= self.cooldown_s:
            self._set(HALF_OPEN)
            return True
        return False

    def retry_after_s(self) -> float:
        """When a request turned away now should come back: after the cool-down, spread."""
        remaining = self.opened_at + self.cooldown_s - self.clock() if self.state == OPEN else 0.0
        return max(0.0, remaining) + self.cooldown_s * random.uniform(0.1, 1.0)

    def success(self) -> None:
        self.failures = 0
        if self.state != CLOSED:
            self.cooldown_s = self.first_cooldown_s
            self._set(CLOSED)

    def failure(self) -> None:
        self.failures += 1
        if self.state == HALF_OPEN:  # the probe failed: still down, wait longer
            self.cooldown_s = min(self.max_cooldown_s, self.cooldown_s * 2)
        elif self.state != CLOSED or self.failures < self.threshold:
            return
        self.opened_at = self.clock()
        self._set(OPEN)
        metrics.WEBHOOK_BREAKER_OPENED.inc()

    def _set(self, state: int) -> None:
        self.state = state
        if state == CLOSED:
            self.closed.set()
        else:
            self.closed.clear()
        metrics.WEBHOOK_BREAKER_STATE.set(state)
        log.warning("webhook circuit %s failures=%d", STATE_NAMES[state], self.failures)


#: At most this much of a webhook's response body is read (the status is what counts).
MAX_RESPONSE_BYTES = 64 * 1024


class WebhookSink:
    """One signed POST per notification (Standard Webhooks), through libcurl (delivery/curl.py);
    4xx but 408 and 429 is permanent. Redirects are not followed: a 3xx is a failure that
    names where it points (following a 301/302 turns the POST into a GET without the body:
    the notification would be lost unseen). At most MAX_RESPONSE_BYTES of an answer are read.

    A circuit breaker stops sending while the endpoint keeps failing.
    """

    name = "webhook"

    def __init__(self, settings: Settings, concurrency: int = 64) -> None:
        self.url = settings.webhook_url
        self.keys = tuple(decode_secret(s) for s in settings.webhook_secrets)
        self.limit = asyncio.Semaphore(concurrency)
        self.breaker = Breaker(settings.breaker_failures, settings.breaker_cooldown_ms / 1000)
        self.client = CurlClient(
            concurrency, settings.webhook_timeout_ms / 1000, MAX_RESPONSE_BYTES
        )

    async def send(self, batch: Sequence[Outgoing]) -> Outcomes:
        return list(await asyncio.gather(*(self._post(item) for item in batch)))

    async def _post(self, item: Outgoing) -> DeliveryError | None:
        event_id = item.notification.event_id
        body = item.body()
        async with self.limit:
            if not self.breaker.allow():
                return CircuitOpen(self.breaker.retry_after_s(), self.breaker.closed)
            timestamp = int(time.time())  # signed when sent, not when queued
            headers = {
                "content-type": "application/json",
                "webhook-id": event_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self.keys, event_id, timestamp, body),
            }
            try:
                answer = await self.client.post(self.url, body, headers)
            except CurlError as exc:
                self.breaker.failure()
                return DeliveryError(f"webhook: {exc}")
        status = answer.status
        if status < 300:
            self.breaker.success()
            return None
        if status < 400:
            self.breaker.success()  # the endpoint answers; it is the address that is wrong
            where = answer.location or "(none)"
            return DeliveryError(f"webhook: HTTP {status} redirect to {where}")
        permanent = 400 <= status < 500 and status not in (408, 429)
        if permanent:
            self.breaker.success()  # the endpoint is up; this one notification is refused
        else:
            self.breaker.failure()
        return DeliveryError(f"webhook: HTTP {status}", permanent=permanent)

    async def close(self) -> None:
        await self.client.close()


def build_sinks(settings: Settings, redis: Client) -> list[Sink]:
    sinks: list[Sink] = []
    for name in settings.notify_sinks:
        if name == "log":
            sinks.append(LogSink())
        elif name == "stream":
            sinks.append(StreamSink(redis, settings.notify_stream, settings.notify_stream_maxlen))
        else:
            sinks.append(WebhookSink(settings))
    return sinks
