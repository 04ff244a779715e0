"""The stream sink's short path (NOTIFY_SINK=stream alone, off Redis Cluster): re-check,
write to the outbound stream and acknowledge in one deliver_stream.lua call a shard,
instead of three round trips. The outcomes are noted in the conversations' history a
moment later (ack.lua, whose acknowledgement is a no-op by then): off the path to the
reader, as a burst's last notifications wait for every call before them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from tracker import metrics
from tracker.delivery.hold import Origin
from tracker.delivery.ledger import (
    Outcome,
    Verdict,
    ack_call,
    ack_entry,
    deliver_stream_call,
    log_delivered,
)
from tracker.delivery.notification import Notification
from tracker.delivery.sinks import StreamSink
from tracker.redis.clock import RedisClock
from tracker.redis.connection import Client
from tracker.redis.scripts import Call, run, run_all
from tracker.settings import Settings

log = logging.getLogger(__name__)

#: Notifications a deliver_stream.lua call takes: short calls, so that Redis serves the
#: API and the sweeper in between.
CHUNK = 500
#: History notes are written this long after their delivery, together.
NOTE_DELAY_S = 0.25


class DirectStream:
    def __init__(self, redis: Client, settings: Settings, clock: RedisClock) -> None:
        self.redis = redis
        self.settings = settings
        self.clock = clock
        self.notes: list[Call[Any]] = []  # history notes to write (_note_later)
        self.writing: set[asyncio.Task[None]] = set()
        self.noting: asyncio.TimerHandle | None = None

    async def deliver(
        self, batch: Sequence[Notification], origin: Origin
    ) -> tuple[list[Notification], list[Notification]]:
        """Deliver `batch` (one call a shard, CHUNK notifications a call, all in one round
        trip). Returns those not due yet on Redis's clock (to hold) and those not in their
        entry's shard (a reshard moved them: for the general path to find)."""
        by_shard: dict[int, list[Notification]] = defaultdict(list)
        for n in batch:
            by_shard[n.shard].append(n)
        s = self.settings
        chunks = [
            items[i : i + CHUNK] for items in by_shard.values() for i in range(0, len(items), CHUNK)
        ]
        calls = [
            deliver_stream_call(
                chunk[0].shard,
                chunk,
                stream=s.notify_stream,
                maxlen=s.notify_stream_maxlen,
                multipliers=s.level_multipliers,
                had_attempts=origin is Origin.PENDING,
            )
            for chunk in chunks
        ]
        early: list[Notification] = []
        elsewhere: list[Notification] = []
        sent = collections.Counter[int]()
        lateness: list[float] = []
        notes: list[Call[Any]] = []
        for chunk, (verdicts, now) in zip(chunks, await run_all(self.redis, calls), strict=True):
            self.clock.observe(now)
            acked: list[str] = []
            delivered: list[Notification] = []
            for n, verdict in zip(chunk, verdicts, strict=True):
                if verdict is Verdict.SEND:
                    sent[n.level] += 1
                    lateness.append(max(0, now - n.due_at_ms) / 1000)
                    acked.append(ack_entry(n, Outcome.DELIVERED, StreamSink.name))
                    delivered.append(n)
                elif verdict is Verdict.EARLY:
                    early.append(n)
                elif verdict is Verdict.ELSEWHERE:
                    elsewhere.append(n)
                else:
                    stale = verdict is Verdict.STALE
                    metrics.SUPPRESSED.labels("stale" if stale else "superseded").inc()
                    acked.append(ack_entry(n, Outcome.SUPPRESSED if stale else Outcome.SUPERSEDED))
            if acked:
                notes.append(ack_call(chunk[0].shard, acked, had_attempts=False, at_ms=now))
            log_delivered(s.delivery_log_level, delivered, StreamSink.name, now)
        metrics.observe_many(metrics.LATENESS, lateness)
        for level, count in sent.items():
            metrics.SENT.labels(str(level)).inc(count)
        self._note_later(notes)
        return early, elsewhere

    def _note_later(self, calls: list[Call[Any]]) -> None:
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

    async def _write(self, calls: list[Call[Any]]) -> None:
        """One call at a time (CHUNK notes, about a millisecond of Redis's): the deliveries
        of a burst still going out go in between."""
        for i, call in enumerate(calls):
            try:
                await run(self.redis, call)
            except RedisError as exc:
                log.warning("history notes not written count=%d error=%s", len(calls) - i, exc)
                return

    async def close(self) -> None:
        """Write the notes waiting, now."""
        if self.noting is not None:
            self.noting.cancel()
            self._write_notes()
        await asyncio.gather(*self.writing, return_exceptions=True)
