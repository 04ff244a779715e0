"""Read due notifications from shard streams, re-check, deliver, acknowledge, retry, dead-letter.

Used by the consumer processes (phase 2) and by the lease holder itself (phase 1).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from tracker import metrics
from tracker.delivery.hold import Held, Hold
from tracker.delivery.notification import Entries, MalformedEntry, Notification, Outgoing
from tracker.delivery.sinks import Deferred, Outcomes, Sink, StreamSink
from tracker.errors import DeliveryError
from tracker.pod.heartbeat import Heartbeat
from tracker.redis.connection import error_kind, is_cluster, redis_time_ms
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys, shard_of_key
from tracker.redis.replies import BusyGroupError, NoGroupError, UnblockedError
from tracker.redis.scripts import Arg, Call, Scripts, run_batch
from tracker.settings import Settings
from tracker.timefmt import format_ms
from tracker.timing.layout import LiveLayout

log = logging.getLogger(__name__)

SEND, STALE, EARLY, ELSEWHERE, SUPERSEDED = 1, 0, 2, 3, 4
#: How the ack script names what became of a notification it acknowledges.
DELIVERED, SUPPRESSED, SUPERSEDED_MARK = "D", "U", "P"
#: At most this much of a sink's error text is kept (attempts hash, history, dead letter).
ERROR_TEXT = 200
READ_COUNT = 512
#: Notifications a deliver_stream.lua call takes: short calls, so that Redis serves the
#: API and the sweeper in between.
DIRECT_CHUNK = 500
#: Batches of held notifications handled at once (a webhook's answers take their time).
RELEASES_IN_FLIGHT = 16
#: The stream sink's history notes are written this long after their delivery, together.
NOTE_DELAY_S = 0.25
#: While the hold is full, the read loop reports itself alive this often.
ROOM_BEAT_S = 5.0
CLUSTER_POLL_MS = 20


def is_nogroup(exc: BaseException) -> bool:
    """The stream or its group is gone: NOGROUP, or a blocked XREADGROUP that Redis
    unblocked because its stream key was deleted ("UNBLOCKED the stream key no longer
    exists")."""
    return isinstance(exc, NoGroupError | UnblockedError)


def one_line(text: str) -> str:
    """An error text as the history and the attempts hash keep it: one line, no '|'."""
    return text.replace("\n", " ").replace("|", "/")[:ERROR_TEXT]


class UnexpectedError(DeliveryError):
    """A sink raised what it should have reported: the entry is dead-lettered at once."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(f"{type(exc).__name__}: {exc}", permanent=True)


class Deliverer:
    """One consumer of the delivery group over a changing set of shards."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        scripts: Scripts,
        sinks: Sequence[Sink],
        consumer: str,
        layout: LiveLayout | None = None,
        role: str = "consumer",
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = scripts
        self.sinks = sinks
        self.consumer = consumer
        self.role = role
        self.layout = layout or LiveLayout(redis, settings)
        self.hold = Hold()
        self.releaser: asyncio.Task[None] | None = None
        self.closing = False
        self.cluster = is_cluster(redis)
        self.retries: set[asyncio.Task[None]] = set()
        self.retrying: set[tuple[int, str]] = set()  # entries waiting for a retry
        self.retry_cap_s = min(30.0, settings.delivery_timeout_ms / 2000)
        # Failures that left entries pending (a batch read, held or retried when Redis
        # failed): when it changes, the read loops read this consumer's own pending again.
        self.failures = 0
        self.multipliers: list[Arg] = list(settings.level_multipliers)
        # The stream sink alone, off Redis Cluster: re-check, write and acknowledge in one
        # script call a shard (deliver_stream.lua) instead of three round trips.
        self.direct = settings.notify_sinks == ("stream",) and not self.cluster
        self.heartbeat: Heartbeat | None = None  # the read loop's, set by consumer.serve
        self.notes: list[Call] = []  # history notes to write (_note_later)
        self.writing: set[asyncio.Task[None]] = set()
        self.noting: asyncio.TimerHandle | None = None

    async def ensure_group(self, shard: int) -> None:
        """Create the delivery group (and the stream) when missing."""
        with contextlib.suppress(BusyGroupError):
            await self.redis.xgroup_create(
                ShardKeys.of(shard).events, CONSUMER_GROUP, id="0", mkstream=True
            )

    async def sync_clock(self) -> None:
        """Read Redis's clock, so held notifications are released on it from the start."""
        self.hold.clock.observe(await redis_time_ms(self.redis))

    async def recreate_group(self, shards: Iterable[int]) -> None:
        for shard in shards:
            await self.ensure_group(shard)
        metrics.STREAM_RECREATED.inc()
        log.warning("consumer group recreated consumer=%s", self.consumer)

    async def read(self, shards: Sequence[int], *, block_ms: int | None) -> int:
        """Read one batch of new entries and handle it.

        On Redis Cluster one XREADGROUP cannot span shards (slots): several shards are
        then read one by one without blocking, and an empty round sleeps briefly instead.
        """
        if not shards:
            return 0
        if len(shards) > 1 and self.cluster:
            counts = await asyncio.gather(*(self.read([s], block_ms=None) for s in shards))
            if not sum(counts) and block_ms:
                await asyncio.sleep(min(block_ms, CLUSTER_POLL_MS) / 1000)
            return sum(counts)
        streams = {ShardKeys.of(s).events: ">" for s in shards}
        reply = await self._xreadgroup(streams, block_ms)
        batch: list[Notification] = []
        for name, entries in _stream_items(reply):
            batch += await self._parse(shard_of_key(name), entries)
        await self.submit(batch)
        await self._wait_room()
        return len(batch)

    async def _wait_room(self) -> None:
        """Wait until the hold has room (a burst can fill it), telling the role's heartbeat
        meanwhile that the loop is alive: waiting for due times is progress too."""
        while not self.hold.has_room():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hold.wait_room(), ROOM_BEAT_S)
            if self.heartbeat is not None:
                self.heartbeat.progress()

    async def _parse(self, shard: int, entries: Entries) -> list[Notification]:
        """The notifications of `entries`; one that cannot be read is dead-lettered at once
        (another attempt would read it no better), so it cannot stop the consumer."""
        out: list[Notification] = []
        for entry_id, fields in entries:
            if not fields:  # deleted since it was read
                continue
            try:
                out.append(Notification.from_entry(shard, entry_id, fields))
            except MalformedEntry as exc:
                await self._dead_letter_unreadable(ShardKeys.of(shard), entry_id, fields, exc)
        return out

    async def _dead_letter_unreadable(
        self, keys: ShardKeys, entry_id: str, fields: dict[str, str], exc: MalformedEntry
    ) -> None:
        args: list[Arg] = [CONSUMER_GROUP, entry_id, f"malformed: {exc}", 1, ""]
        for field, value in fields.items():  # as they were, bytes that are not UTF-8 too
            args += [_raw(field), _raw(value)]
        await self.scripts.dead_letter.run(self.redis, keys.for_dead_letter, args)
        metrics.DEAD_LETTERED.labels("malformed").inc()
        log.warning(
            "dead-lettered an unreadable entry shard=%d entry=%s error=%s",
            keys.shard,
            entry_id,
            exc,
        )

    async def _xreadgroup(self, streams: dict[str, str], block_ms: int | None) -> Any:
        if not self.cluster:
            return await self.redis.xreadgroup(
                CONSUMER_GROUP, self.consumer, cast(Any, streams), count=READ_COUNT, block=block_ms
            )
        # On a cluster, name the node: redis-py would otherwise ask a fixed node for the
        # keys of XREADGROUP (COMMAND GETKEYS) and keep asking it after that node failed.
        cluster = cast(RedisCluster, self.redis)
        await cluster.initialize()  # a no-op unless a failure asked for a topology refresh
        ((key, start),) = streams.items()
        args: list[Any] = [
            "XREADGROUP",
            "GROUP",
            CONSUMER_GROUP,
            self.consumer,
            "COUNT",
            READ_COUNT,
        ]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        args += ["STREAMS", key, start]
        return await cluster.execute_command(*args, target_nodes=cluster.get_node_from_key(key))

    async def drain_own(self, shards: Sequence[int]) -> None:
        """Deliver what this consumer read and never acknowledged: before a restart, or
        when a failure (Redis away, the process paused) left a batch pending. Pages through
        the pending list, so held entries (not due yet) do not keep it reading the same."""
        for shard in shards:
            start = "0"
            while True:
                reply = await self._xreadgroup({ShardKeys.of(shard).events: start}, None)
                entries = [e for _, entries in _stream_items(reply) for e in entries]
                batch = await self._parse(shard, entries)
                await self.submit(batch, retried=True, just_read_pending=True)
                await self._wait_room()
                if len(entries) < READ_COUNT:
                    break
                start = entries[-1][0]

    async def claim(self, shards: Sequence[int], min_idle_ms: int | None = None) -> int:
        """Take over entries idle past `min_idle_ms` (DELIVERY_TIMEOUT_MS by default), from
        any consumer of any pod."""
        idle = self.settings.delivery_timeout_ms if min_idle_ms is None else min_idle_ms
        claimed = 0
        for shard in shards:
            start = "0-0"
            while True:
                start, entries, _deleted = await self.redis.xautoclaim(
                    ShardKeys.of(shard).events,
                    CONSUMER_GROUP,
                    self.consumer,
                    min_idle_time=idle,
                    start_id=start,
                    count=READ_COUNT,
                )
                batch = await self._parse(shard, entries)
                await self.submit(batch, retried=True, just_read_pending=True)
                claimed += len(batch)
                if start == "0-0":
                    break
        if claimed:
            log.info("claimed idle entries count=%d consumer=%s", claimed, self.consumer)
        return claimed

    async def submit(
        self,
        batch: Sequence[Notification],
        *,
        retried: bool = False,
        just_read_pending: bool = False,
    ) -> None:
        """Handle what is due now; hold what the sweeper staged early until it is due."""
        now = self.hold.clock.now_ms()
        ready: list[Notification] = []
        for n in batch:
            if self.hold.holds(n) or (n.shard, n.entry_id) in self.retrying:
                continue  # read again while held, being sent or waiting to retry: sent once
            if n.due_at_ms > now:
                self._hold(Held(n, retried, just_read_pending))
            else:
                ready.append(n)
        await self.handle(ready, retried=retried, just_read_pending=just_read_pending)

    def _hold(self, item: Held) -> None:
        self.hold.add(item)
        if self.releaser is None:
            self.releaser = asyncio.create_task(self._release())

    async def _release(self) -> None:
        """Handle held notifications as they fall due, everything due at once in one batch,
        without waiting for the batch before (up to RELEASES_IN_FLIGHT at once): what falls
        due a few milliseconds after a batch goes out does not wait for that batch's
        webhook answers. A batch that fails on Redis stays pending in its stream: the read
        loop reads it again."""
        slots = asyncio.Semaphore(RELEASES_IN_FLIGHT)
        handling: set[asyncio.Task[None]] = set()
        try:
            while not (self.closing and not self.hold):
                await self.hold.wait_due()
                items = self.hold.take_due()
                if not items:
                    continue
                await slots.acquire()
                task = asyncio.create_task(self._handle_held(items))
                task.add_done_callback(lambda _: slots.release())
                handling.add(task)
                task.add_done_callback(handling.discard)
                for done in [t for t in handling if t.done()]:
                    done.result()  # a bug in handling stops the releaser: the process restarts
        finally:
            for outcome in await asyncio.gather(*handling, return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.error("handling held notifications failed error=%r", outcome)

    async def _handle_held(self, items: list[Held]) -> None:
        groups: dict[tuple[bool, bool], list[Notification]] = defaultdict(list)
        for item in items:
            groups[item.retried, item.just_read_pending].append(item.notification)
        try:
            for (retried, pending), batch in groups.items():
                await self.handle(batch, retried=retried, just_read_pending=pending)
        except RedisError as exc:
            if is_nogroup(exc):
                log.warning("stream gone, held batch dropped error=%s", exc)
            else:  # left pending: the read loop reads it again once Redis answers
                self.failures += 1
                metrics.REDIS_ERRORS.labels(self.role, error_kind(exc)).inc()
                log.warning("redis error, held batch left pending error=%s", exc)
        finally:
            self.hold.settle(items)

    def check_releaser(self) -> None:
        """Raise what stopped the releaser, if anything did (the process then restarts)."""
        if self.releaser is not None and self.releaser.done():
            self.releaser.result()

    async def handle(
        self,
        batch: Sequence[Notification],
        *,
        retried: bool = False,
        just_read_pending: bool = False,
    ) -> None:
        """Re-check, deliver and acknowledge a batch that may span shards: one pipelined
        round trip for every shard's re-check, one send per sink, one for every shard's ack.
        `retried` entries (own or claimed pending ones, retries) may have failed attempts to
        forget, and may have been delivered meanwhile by the consumer they were claimed from:
        they are confirmed still pending first, unless the caller has `just_read_pending`
        them from the pending list (a claim, or this consumer's own pending entries)."""
        if retried and not just_read_pending:
            batch = await self._still_pending(batch)
        if not batch:
            return
        if self.direct:
            batch = await self._deliver_to_stream(batch, retried, just_read_pending)
            if not batch:  # those a reshard moved away go the general way
                return
        to_send, done, early = await self._recheck(batch)
        for n in early:  # this process's clock runs ahead of Redis's
            self._hold(Held(n, retried, just_read_pending))
        fired_at_ms = int(time.time() * 1000)
        fired_at = format_ms(fired_at_ms)
        outgoing = [n.outgoing(fired_at_ms, fired_at) for n in to_send]
        failures = await self._send(outgoing)
        accepted_ms = self.hold.clock.now_ms()  # the lateness that counts: sinks have it
        sent = collections.Counter[int]()
        lateness: list[float] = []
        delivered_to = ",".join(sink.name for sink in self.sinks)
        for item in outgoing:
            n = item.notification
            if (n.shard, n.entry_id) not in failures:
                done[n.shard].append(_ack_arg(n, DELIVERED, delivered_to))
                sent[n.level] += 1
                lateness.append(max(0, accepted_ms - n.due_at_ms) / 1000)
        metrics.observe_many(metrics.LATENESS, lateness)
        for level, count in sent.items():
            metrics.SENT.labels(str(level)).inc(count)
        await self._ack(done, retried)
        for item in outgoing:
            failure = failures.get((item.notification.shard, item.notification.entry_id))
            if failure is not None:
                await self._failed(
                    ShardKeys.of(item.notification.shard), item.notification, *failure
                )

    async def _deliver_to_stream(
        self, batch: Sequence[Notification], retried: bool, just_read_pending: bool
    ) -> list[Notification]:
        """The stream sink's delivery: one deliver_stream.lua call a shard (DIRECT_CHUNK
        notifications a call), all in one round trip; then, off the path to the reader, the
        outcomes noted in the history (ack.lua: its acknowledgement is a no-op by then).
        Returns those not in their entry's shard (a reshard moved them), for the general
        path to find."""
        calls: list[Call] = []
        chunks: list[Sequence[Notification]] = []
        by_shard: dict[int, list[Notification]] = defaultdict(list)
        for n in batch:
            by_shard[n.shard].append(n)
        maxlen = self.settings.notify_stream_maxlen
        head: list[Arg] = [CONSUMER_GROUP, maxlen, *self.multipliers, int(retried)]
        for shard, items in by_shard.items():
            keys = ShardKeys.of(shard).for_deliver_stream(self.settings.notify_stream)
            for i in range(0, len(items), DIRECT_CHUNK):
                chunk = items[i : i + DIRECT_CHUNK]
                args = head + [a for n in chunk for a in n.direct_args]
                calls.append((self.scripts.deliver_stream, keys, args))
                chunks.append(chunk)
        elsewhere: list[Notification] = []
        sent = collections.Counter[int]()
        lateness: list[float] = []
        notes: list[Call] = []
        for done, reply in zip(chunks, await run_batch(self.redis, calls), strict=True):
            *codes, now = reply
            self.hold.clock.observe(int(now))
            acked: list[Arg] = []
            for n, code in zip(done, codes, strict=True):
                if code == SEND:
                    sent[n.level] += 1
                    lateness.append(max(0, now - n.due_at_ms) / 1000)
                    acked.append(_ack_arg(n, DELIVERED, StreamSink.name))
                elif code == EARLY:
                    self._hold(Held(n, retried, just_read_pending))
                elif code == ELSEWHERE:
                    elsewhere.append(n)
                else:
                    stale = code != SUPERSEDED
                    metrics.SUPPRESSED.labels("stale" if stale else "superseded").inc()
                    acked.append(_ack_arg(n, SUPPRESSED if stale else SUPERSEDED_MARK))
            if acked:
                keys = ShardKeys.of(done[0].shard).for_ack
                notes.append((self.scripts.ack, keys, [CONSUMER_GROUP, 0, now, *acked]))
        metrics.observe_many(metrics.LATENESS, lateness)
        for level, count in sent.items():
            metrics.SENT.labels(str(level)).inc(count)
        self._note_later(notes)
        return elsewhere

    def _note_later(self, calls: list[Call]) -> None:
        """Write history notes NOTE_DELAY_S from now, with whatever else comes meanwhile, a
        call at a time: while a burst goes out, Redis's time is the burst's. A note is best
        effort (a process killed before it writes loses it; the delivery itself stands)."""
        self.notes += calls
        if calls and self.noting is None:
            self.noting = asyncio.get_running_loop().call_later(NOTE_DELAY_S, self._write_notes)

    def _write_notes(self) -> None:
        self.noting = None
        calls, self.notes = self.notes, []
        task = asyncio.create_task(self._write(calls))
        self.writing.add(task)
        task.add_done_callback(self.writing.discard)

    async def _write(self, calls: list[Call]) -> None:
        """One call at a time (DIRECT_CHUNK notes, about a millisecond of Redis's): the
        deliveries of a burst still going out go in between."""
        for i, call in enumerate(calls):
            try:
                await run_batch(self.redis, [call])
            except RedisError as exc:
                log.warning("history notes not written count=%d error=%s", len(calls) - i, exc)
                return

    async def _recheck(
        self, batch: Sequence[Notification]
    ) -> tuple[list[Notification], dict[int, list[str]], list[Notification]]:
        """Split a batch into what to send now, the ack arguments of what is acknowledged
        unsent (stale or superseded) and what is not due yet, asking every shard in one
        pipelined round trip. A conversation a reshard moved away from its entry's shard is
        asked where it lives now."""
        codes = await self._codes(batch, [n.shard for n in batch])
        if ELSEWHERE in codes:
            layout = await self.layout.refresh()
            for candidate in (layout.source, layout.shard):
                shards = [
                    candidate(n.conversation_id) if code == ELSEWHERE else None
                    for n, code in zip(batch, codes, strict=True)
                ]
                found = await self._codes(
                    batch, [s if s != n.shard else None for n, s in zip(batch, shards, strict=True)]
                )
                codes = [f if f is not None else c for c, f in zip(codes, found, strict=True)]
        to_send: list[Notification] = []
        early: list[Notification] = []
        unsent: dict[int, list[str]] = defaultdict(list)
        for n, code in zip(batch, codes, strict=True):
            if code == SEND:
                to_send.append(n)
            elif code == EARLY:
                early.append(n)
            elif code == SUPERSEDED:
                metrics.SUPPRESSED.labels("superseded").inc()
                unsent[n.shard].append(_ack_arg(n, SUPERSEDED_MARK))
            else:
                metrics.SUPPRESSED.labels("stale").inc()
                unsent[n.shard].append(_ack_arg(n, SUPPRESSED))
        return to_send, unsent, early

    async def _codes(
        self, batch: Sequence[Notification], shards: Sequence[int | None]
    ) -> list[Any]:
        """The recheck code of each notification in the shard beside it (None: not asked)."""
        by_shard: dict[int, list[int]] = defaultdict(list)
        for i, shard in enumerate(shards):
            if shard is not None:
                by_shard[shard].append(i)
        calls: list[Call] = []
        for shard, indices in by_shard.items():
            args: list[Arg] = [*self.multipliers, *(batch[i].recheck_arg for i in indices)]
            calls.append((self.scripts.recheck, ShardKeys.of(shard).for_recheck, args))
        codes: list[Any] = [None] * len(batch)
        replies = await run_batch(self.redis, calls)
        for indices, reply in zip(by_shard.values(), replies, strict=True):
            *shard_codes, redis_now = reply
            self.hold.clock.observe(int(redis_now))
            for i, code in zip(indices, shard_codes, strict=True):
                codes[i] = int(code)
        return codes

    async def _send(
        self, outgoing: list[Outgoing]
    ) -> dict[tuple[int, str], tuple[str, DeliveryError]]:
        """Send to every sink; an event fails when any sink fails (the worst error wins,
        with the sink that gave it). A sink that raises instead of reporting is asked again
        one event at a time: the events it still raises on are UnexpectedError."""
        failures: dict[tuple[int, str], tuple[str, DeliveryError]] = {}  # by shard, entry id
        if not outgoing:
            return failures
        results = await asyncio.gather(*(self._send_to(sink, outgoing) for sink in self.sinks))
        for sink, outcomes in zip(self.sinks, results, strict=True):
            for item, error in zip(outgoing, outcomes, strict=True):
                if error is None:
                    continue
                if not isinstance(error, Deferred):
                    metrics.DELIVERY_FAILED.labels(sink.name).inc()
                entry = (item.notification.shard, item.notification.entry_id)
                if entry not in failures or _severity(error) > _severity(failures[entry][1]):
                    failures[entry] = (sink.name, error)
        return failures

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

    async def _ack(self, done: dict[int, list[str]], retried: bool) -> None:
        """Acknowledge every shard's entries (noting each one's outcome in its conversation's
        history) in one pipelined round trip."""
        calls: list[Call] = []
        for shard, entries in done.items():
            if entries:
                k = ShardKeys.of(shard)
                args: list[Arg] = [CONSUMER_GROUP, int(retried), 0, *entries]
                calls.append((self.scripts.ack, k.for_ack, args))
        if calls:
            await run_batch(self.redis, calls)

    async def _still_pending(self, batch: Sequence[Notification]) -> list[Notification]:
        """The entries of `batch` still pending, now owned by this consumer (XCLAIM JUSTID,
        one pipelined round trip). One that the consumer it was claimed from, slow but
        alive, delivered and acknowledged meanwhile is dropped: no second send."""
        by_shard: dict[int, list[Notification]] = defaultdict(list)
        for n in batch:
            by_shard[n.shard].append(n)
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, items in by_shard.items():
                pipe.xclaim(
                    ShardKeys.of(shard).events,
                    CONSUMER_GROUP,
                    self.consumer,
                    min_idle_time=0,
                    message_ids=[n.entry_id for n in items],
                    justid=True,
                )
            replies = await pipe.execute()
        pending = {
            (shard, str(entry_id))
            for shard, ids in zip(by_shard, replies, strict=True)
            for entry_id in ids
        }
        kept = [n for n in batch if (n.shard, n.entry_id) in pending]
        if len(kept) < len(batch):
            metrics.SUPPRESSED.labels("duplicate").inc(len(batch) - len(kept))
        return kept

    async def _failed(
        self, keys: ShardKeys, n: Notification, sink: str, error: DeliveryError
    ) -> None:
        if isinstance(error, Deferred):  # not attempted: no attempt counted
            delay = min(self.retry_cap_s, error.retry_after_s)
            self._schedule_retry(keys, n, delay, error.until)
            return
        args: list[Arg] = [
            n.entry_id,
            n.conversation_id,
            n.generation,
            n.level,
            sink,
            one_line(str(error)),
        ]
        attempts = int(
            await self.scripts.attempt_failed.run(self.redis, keys.for_attempt_failed, args)
        )
        if error.permanent or attempts >= self.settings.max_deliveries:
            if isinstance(error, UnexpectedError):
                reason = "unexpected"
            else:
                reason = "permanent" if error.permanent else "max_deliveries"
            await self.dead_letter(keys, n, f"{reason}: {one_line(str(error))}", attempts)
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
        self._schedule_retry(keys, n, delay)

    def _schedule_retry(
        self, keys: ShardKeys, n: Notification, delay: float, until: asyncio.Event | None = None
    ) -> None:
        """Try `n` again after `delay`, or as soon as `until` is set."""
        self.retrying.add((n.shard, n.entry_id))
        task = asyncio.create_task(self._retry(keys, n, delay, until))
        self.retries.add(task)
        task.add_done_callback(self.retries.discard)

    async def _retry(
        self, keys: ShardKeys, n: Notification, delay: float, until: asyncio.Event | None
    ) -> None:
        try:
            if until is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(until.wait(), delay)
            # Keep the entry ours (resets its idle time); nothing back means it was settled.
            claimed = await self.redis.xclaim(
                keys.events, CONSUMER_GROUP, self.consumer, 0, [n.entry_id], justid=True
            )
            self.retrying.discard((n.shard, n.entry_id))
            if claimed:
                await self.handle([n], retried=True, just_read_pending=True)
        except RedisError as exc:  # still pending: the read loop reads it again
            self.failures += 1
            log.warning("retry failed event_id=%s error=%s", n.event_id, exc)
        finally:
            self.retrying.discard((n.shard, n.entry_id))

    async def dead_letter(
        self, keys: ShardKeys, n: Notification, reason: str, attempts: int
    ) -> None:
        args: list[Arg] = [CONSUMER_GROUP, n.entry_id, reason, attempts, n.history_key]
        for field, value in n.readable_fields().items():
            args += [field, value]
        await self.scripts.dead_letter.run(self.redis, keys.for_dead_letter, args)

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
        if self.noting is not None:  # the notes waiting: now
            self.noting.cancel()
            self._write_notes()
        for task in list(self.retries):
            task.cancel()
        await asyncio.gather(*self.retries, *self.writing, return_exceptions=True)
        for sink in self.sinks:
            await sink.close()


def _raw(text: str) -> bytes:
    """A value as Redis held it (read with surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


def _ack_arg(n: Notification, outcome: str, sinks: str = "") -> str:
    """One entry as the ack script takes it."""
    return f"{n.entry_id}|{n.conversation_id}|{n.generation}|{n.level}|{outcome}|{sinks}"


def _severity(error: DeliveryError) -> int:
    """Which sink's error decides an event's fate: permanent, then a real attempt, then
    a breaker's refusal (which alone costs no attempt)."""
    if error.permanent:
        return 2
    return 0 if isinstance(error, Deferred) else 1


def _stream_items(reply: Any) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """XREADGROUP's (RESP2) reply as (stream, entries); None when BLOCK timed out."""
    return [(name, entries) for name, entries in reply or []]
