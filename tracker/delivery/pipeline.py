"""The delivery pipeline: hold a notification until it is due, re-check it against its
conversation, send it to every sink, acknowledge it; a failure goes to `Failures`.

Fed by the stream reader (tracker/delivery/reader.py), in the consumer processes (phase 2)
and in the lease holder itself (phase 1).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Sequence

from redis.exceptions import RedisError

from tracker import metrics
from tracker.delivery.direct import DirectStream
from tracker.delivery.failures import Failures, UnexpectedError
from tracker.delivery.hold import Held, Hold, Origin
from tracker.delivery.ledger import (
    Outcome,
    Verdict,
    ack_call,
    ack_entry,
    log_delivered,
    recheck_call,
)
from tracker.delivery.notification import Notification, Outgoing
from tracker.delivery.sinks import Deferred, Outcomes, Sink
from tracker.errors import DeliveryError
from tracker.redis.cluster import is_cluster
from tracker.redis.connection import Client, error_kind
from tracker.redis.replies import NoGroupError, UnblockedError
from tracker.redis.scripts import run_all
from tracker.settings import Settings
from tracker.state.layout import LiveLayout
from tracker.timefmt import format_ms

log = logging.getLogger(__name__)

#: Batches of held notifications handled at once (a webhook's answers take their time).
RELEASES_IN_FLIGHT = 16

#: The stream or its group is gone: NOGROUP, or a blocked XREADGROUP that Redis unblocked
#: because its stream key was deleted.
STREAM_GONE = (NoGroupError, UnblockedError)

Failed = dict[tuple[int, str], tuple[str, DeliveryError]]  # (shard, entry id) -> sink, error


class Pipeline:
    def __init__(
        self,
        redis: Client,
        settings: Settings,
        sinks: Sequence[Sink],
        consumer: str,
        layout: LiveLayout | None = None,
        role: str = "consumer",
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.sinks = sinks
        self.role = role
        self.layout = layout or LiveLayout(redis, settings)
        self.hold = Hold()
        self.releaser: asyncio.Task[None] | None = None
        self.closing = False
        # Failures that left entries pending (a batch held or retried when Redis failed):
        # when it changes, the read loop reads this consumer's own pending entries again.
        self.left_pending = 0
        self.failures = Failures(redis, settings, consumer, self.handle, self._left_pending)
        direct = settings.notify_sinks == ("stream",) and not is_cluster(redis)
        self.direct = DirectStream(redis, settings, self.hold.clock) if direct else None

    def _left_pending(self) -> None:
        self.left_pending += 1

    async def submit(self, batch: Sequence[Notification], origin: Origin) -> None:
        """Handle what is due now; hold what the sweeper staged early until it is due."""
        now = self.hold.clock.now_ms()
        ready: list[Notification] = []
        for n in batch:
            if self.hold.holds(n) or self.failures.waiting(n):
                continue  # read again while held, being sent or waiting to retry: sent once
            if n.due_at_ms > now:
                self._hold(Held(n, origin))
            else:
                ready.append(n)
        await self.handle(ready, origin)

    def _hold(self, item: Held) -> None:
        self.hold.add(item)
        if self.releaser is None:
            self.releaser = asyncio.create_task(self._release())

    async def _release(self) -> None:
        """Handle held notifications as they fall due, everything due at once in one batch,
        without waiting for the batch before (up to RELEASES_IN_FLIGHT at once): what falls
        due a few milliseconds after a batch goes out does not wait for that batch's
        webhook answers. A batch that fails on Redis stays pending in its stream: the read
        loop reads it again. A batch with a conversation that a batch in flight also holds
        waits for that one (guarantee 7: its lower level reaches the receiver first)."""
        slots = asyncio.Semaphore(RELEASES_IN_FLIGHT)
        handling: set[asyncio.Task[None]] = set()
        in_flight: dict[str, asyncio.Task[None]] = {}  # conversation -> its latest batch
        try:
            while not (self.closing and not self.hold):
                await self.hold.wait_due()
                items = self.hold.take_due()
                if not items:
                    continue
                await slots.acquire()
                conversations = {item.notification.conversation_id for item in items}
                after = {in_flight[c] for c in conversations if c in in_flight}
                task = asyncio.create_task(self._handle_held(items, after))
                for c in conversations:
                    in_flight[c] = task
                task.add_done_callback(functools.partial(_forget, in_flight, conversations))
                task.add_done_callback(lambda _: slots.release())
                handling.add(task)
                task.add_done_callback(handling.discard)
                for done in [t for t in handling if t.done()]:
                    done.result()  # a bug in handling stops the releaser: the process restarts
        finally:
            for outcome in await asyncio.gather(*handling, return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.error("handling held notifications failed error=%r", outcome)

    async def _handle_held(self, items: list[Held], after: set[asyncio.Task[None]]) -> None:
        await asyncio.gather(*after, return_exceptions=True)  # their errors are theirs
        by_origin: dict[Origin, list[Notification]] = defaultdict(list)
        for item in items:
            by_origin[item.origin].append(item.notification)
        try:
            for origin, batch in by_origin.items():
                await self.handle(batch, origin)
        except STREAM_GONE as exc:
            log.warning("stream gone, held batch dropped error=%s", exc)
        except RedisError as exc:  # left pending: the read loop reads it again
            self.left_pending += 1
            metrics.REDIS_ERRORS.labels(self.role, error_kind(exc)).inc()
            log.warning("redis error, held batch left pending error=%s", exc)
        finally:
            self.hold.settle(items)

    def check_releaser(self) -> None:
        """Raise what stopped the releaser, if anything did (the process then restarts)."""
        if self.releaser is not None and self.releaser.done():
            self.releaser.result()

    async def handle(self, batch: Sequence[Notification], origin: Origin) -> None:
        """Re-check, deliver and acknowledge a batch that may span shards: one pipelined
        round trip for every shard's re-check, one send per sink, one for every shard's ack."""
        if not batch:
            return
        if self.direct is not None:
            early, batch = await self.direct.deliver(batch, origin)
            for n in early:  # this process's clock runs ahead of Redis's
                self._hold(Held(n, origin))
            if not batch:  # those a reshard moved away go the general way
                return
        to_send, done, early = await self._recheck(batch)
        for n in early:
            self._hold(Held(n, origin))
        fired_at_ms = int(time.time() * 1000)
        fired_at = format_ms(fired_at_ms)
        outgoing = [n.outgoing(fired_at_ms, fired_at) for n in to_send]
        failed = await self._send(outgoing)
        accepted_ms = self.hold.clock.now_ms()  # the lateness that counts: sinks have it
        sent = collections.Counter[int]()
        lateness: list[float] = []
        delivered: list[Notification] = []
        delivered_to = ",".join(sink.name for sink in self.sinks)
        for item in outgoing:
            n = item.notification
            if (n.shard, n.entry_id) not in failed:
                done[n.shard].append(ack_entry(n, Outcome.DELIVERED, delivered_to))
                sent[n.level] += 1
                lateness.append(max(0, accepted_ms - n.due_at_ms) / 1000)
                delivered.append(n)
        metrics.observe_many(metrics.LATENESS, lateness)
        for level, count in sent.items():
            metrics.SENT.labels(str(level)).inc(count)
        await self._ack(done, origin)
        log_delivered(self.settings.delivery_log_level, delivered, delivered_to, accepted_ms)
        for item in outgoing:
            failure = failed.get((item.notification.shard, item.notification.entry_id))
            if failure is not None:
                await self.failures.failed(item.notification, *failure)

    async def _recheck(
        self, batch: Sequence[Notification]
    ) -> tuple[list[Notification], dict[int, list[str]], list[Notification]]:
        """Split a batch into what to send now, the ack entries of what is acknowledged
        unsent (stale or superseded) and what is not due yet, asking every shard in one
        pipelined round trip. A conversation a reshard moved away from its entry's shard is
        asked where it lives now."""
        verdicts = await self._verdicts(batch, [n.shard for n in batch])
        if Verdict.ELSEWHERE in verdicts:
            layout = await self.layout.refresh()
            for candidate in (layout.source, layout.shard):
                shards = [
                    candidate(n.conversation_id) if v is Verdict.ELSEWHERE else None
                    for n, v in zip(batch, verdicts, strict=True)
                ]
                found = await self._verdicts(
                    batch, [s if s != n.shard else None for n, s in zip(batch, shards, strict=True)]
                )
                verdicts = [f if f is not None else v for v, f in zip(verdicts, found, strict=True)]
        to_send: list[Notification] = []
        early: list[Notification] = []
        unsent: dict[int, list[str]] = defaultdict(list)
        for n, verdict in zip(batch, verdicts, strict=True):
            if verdict is Verdict.SEND:
                to_send.append(n)
            elif verdict is Verdict.EARLY:
                early.append(n)
            elif verdict is Verdict.SUPERSEDED:
                metrics.SUPPRESSED.labels("superseded").inc()
                unsent[n.shard].append(ack_entry(n, Outcome.SUPERSEDED))
            else:
                metrics.SUPPRESSED.labels("stale").inc()
                unsent[n.shard].append(ack_entry(n, Outcome.SUPPRESSED))
        return to_send, unsent, early

    async def _verdicts(
        self, batch: Sequence[Notification], shards: Sequence[int | None]
    ) -> list[Verdict | None]:
        """The re-check of each notification in the shard beside it (None: not asked)."""
        by_shard: dict[int, list[int]] = defaultdict(list)
        for i, shard in enumerate(shards):
            if shard is not None:
                by_shard[shard].append(i)
        multipliers = self.settings.level_multipliers
        calls = [
            recheck_call(shard, [batch[i] for i in indices], multipliers)
            for shard, indices in by_shard.items()
        ]
        verdicts: list[Verdict | None] = [None] * len(batch)
        replies = await run_all(self.redis, calls)
        for indices, (shard_verdicts, redis_now) in zip(by_shard.values(), replies, strict=True):
            self.hold.clock.observe(redis_now)
            for i, verdict in zip(indices, shard_verdicts, strict=True):
                verdicts[i] = verdict
        return verdicts

    async def _send(self, outgoing: list[Outgoing]) -> Failed:
        """Send to every sink; a notification fails when any sink fails (the worst error
        wins, with the sink that gave it). A sink that raises instead of reporting is asked
        again one notification at a time: those it still raises on are UnexpectedError."""
        failed: Failed = {}
        if not outgoing:
            return failed
        results = await asyncio.gather(*(self._send_to(sink, outgoing) for sink in self.sinks))
        for sink, outcomes in zip(self.sinks, results, strict=True):
            for item, error in zip(outgoing, outcomes, strict=True):
                if error is None:
                    continue
                if not isinstance(error, Deferred):
                    metrics.DELIVERY_FAILED.labels(sink.name).inc()
                entry = (item.notification.shard, item.notification.entry_id)
                if entry not in failed or _severity(error) > _severity(failed[entry][1]):
                    failed[entry] = (sink.name, error)
        return failed

    async def _send_to(self, sink: Sink, outgoing: Sequence[Outgoing]) -> Outcomes:
        try:
            return await sink.send(outgoing)
        except Exception as exc:
            if len(outgoing) == 1:
                log.exception(
                    "sink %s raised event_id=%s", sink.name, outgoing[0].notification.event_id
                )
                return [UnexpectedError(exc)]
        outcomes: Outcomes = []
        for item in outgoing:  # which of them does it raise on?
            outcomes += await self._send_to(sink, [item])
        return outcomes

    async def _ack(self, done: dict[int, list[str]], origin: Origin) -> None:
        """Acknowledge every shard's entries (noting each one's outcome in its conversation's
        history) in one pipelined round trip."""
        had_attempts = origin is Origin.PENDING
        calls = [
            ack_call(shard, entries, had_attempts=had_attempts)
            for shard, entries in done.items()
            if entries
        ]
        if calls:
            await run_all(self.redis, calls)

    async def close(self) -> None:
        """Deliver what is held (due within PREFETCH_MS), stop retrying, close the sinks."""
        self.closing = True
        if self.releaser is not None:
            wait_s = max(0.0, (self.hold.latest_due_ms() - self.hold.clock.now_ms()) / 1000) + 5.0
            self.hold.wake()
            try:
                await asyncio.wait_for(self.releaser, wait_s)
            except Exception as exc:  # left pending: redelivered after a restart or claimed
                log.warning(
                    "held notifications left pending count=%d error=%r", len(self.hold), exc
                )
        if self.direct is not None:
            await self.direct.close()
        await self.failures.close()
        for sink in self.sinks:
            await sink.close()


def _forget(
    in_flight: dict[str, asyncio.Task[None]], conversations: set[str], task: asyncio.Task[None]
) -> None:
    """A finished batch no longer orders the conversations a later batch has not taken."""
    for c in conversations:
        if in_flight.get(c) is task:
            del in_flight[c]


def _severity(error: DeliveryError) -> int:
    """Which sink's error decides a notification's fate: permanent, then a real attempt,
    then a breaker's refusal (which alone costs no attempt)."""
    if error.permanent:
        return 2
    return 0 if isinstance(error, Deferred) else 1
