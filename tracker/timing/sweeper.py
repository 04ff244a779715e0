"""The sweeper role: hold shard leases, move due timeouts into the shard streams on time.

Each sweep stages what is due within PREFETCH_MS in the shard's outbox. Between sweeps it
sleeps until half of PREFETCH_MS before the earliest deadline of the shards it leads (at most
CHECK_INTERVAL_MS), so every deadline is staged at least half a prefetch early; a wake
message from the apply script cuts the sleep short when an earlier deadline arrives. What it
stages early, the deliverers hold until it is due. With MODE=phase1 it also delivers what it
staged (the sweeper delivers); with phase2 the consumer processes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from typing import NamedTuple

from redis.exceptions import RedisError

from tracker import metrics
from tracker.delivery.loop import serve
from tracker.delivery.pipeline import Pipeline
from tracker.delivery.reader import StreamReader
from tracker.delivery.sinks import build_sinks
from tracker.pod.heartbeat import Heartbeat
from tracker.redis import cluster
from tracker.redis.backoff import Backoff, report
from tracker.redis.clock import RedisClock
from tracker.redis.connection import Client, close, connect
from tracker.redis.keys import WAKE_CHANNEL_PREFIX, ShardKeys
from tracker.redis.replies import FencedError
from tracker.redis.scripts import Arg, Call, Script, run
from tracker.settings import Settings
from tracker.state.layout import LiveLayout
from tracker.timing import maintenance, progress
from tracker.timing.lease import Leases

log = logging.getLogger(__name__)

MAINTENANCE_EVERY_S = 5.0
PROGRESS_WRITE_S = 0.5

SWEEP = Script.load("sweep")


class Swept(NamedTuple):
    fired: int  # notifications staged in the shard's outbox
    next_due_ms: float  # the shard's earliest deadline left (inf: none)
    now_ms: int  # Redis's clock
    more: bool  # a full batch: sweep again


def sweep_call(shard: int, lease: str, settings: Settings, batch: int | None = None) -> Call[Swept]:
    """Stage what is due (within PREFETCH_MS) in the shard's outbox and arm the next level;
    raises FencedError when `lease` is no longer the shard's."""
    k = ShardKeys.of(shard)
    keys = [
        k.waiting,
        k.fired,
        k.records,
        k.retired,
        k.outbox,
        k.leader,
        k.counters,
        k.history,
    ]
    args: list[Arg] = [
        lease,
        batch or settings.sweep_batch,
        *settings.level_multipliers,
        settings.finished_retention_ms,
        settings.prefetch_ms,
    ]
    return Call(SWEEP, keys, args, _swept)


def _swept(reply: list[int]) -> Swept:
    fired, next_due, now, more = (int(v) for v in reply)
    return Swept(fired, float(next_due) if next_due >= 0 else math.inf, now, bool(more))


class Sweeper:
    def __init__(self, settings: Settings, redis: Client) -> None:
        self.settings = settings
        self.redis = redis
        self.leases = Leases(redis, settings)
        self.layout = LiveLayout(redis, settings)
        self.next_due: dict[int, float] = {}  # shard -> due ms (Redis clock)
        self.last_sweep: dict[int, int] = {}
        self.clock = RedisClock()  # deadlines are on Redis's clock
        self.servers: dict[int, str] = {}  # shard -> the Redis server that holds it
        self.failover_at: dict[int, float] = {}  # shard -> monotonic time its server changed
        self.hold_until: dict[int, float] = {}  # shard -> no sweep before this monotonic time
        self.next_progress_write = 0.0  # monotonic time of the next progress-file write
        self.wake = asyncio.Event()
        # A sweep stages what is due within PREFETCH_MS; the next one comes when the earliest
        # deadline left is half that away: each sweep then moves half a prefetch's worth,
        # not the few deadlines that entered the window since the last one.
        self.wake_ahead_ms = settings.prefetch_ms / 2

    async def rebalance(self) -> None:
        layout = await self.layout.refresh()
        self.leases.resize(layout.span)  # a reshard adds shards, or removes them at its end
        await self.watch_failovers()
        gained, lost = await self.leases.balance()
        for shard in lost:  # first: a shard can be lost and taken again in one round
            self.forget(shard)
        ttl_s = self.settings.leader_ttl_ms / 1000
        for shard in gained:
            self.next_due[shard] = 0
            if time.monotonic() - self.failover_at.get(shard, -math.inf) < 2 * ttl_s:
                # An old holder cut off on the old master may still believe it leads:
                # let its lease run out before the first sweep.
                self.hold_until[shard] = time.monotonic() + ttl_s
                log.warning("shard=%d taken after a failover: first sweep in %.1fs", shard, ttl_s)

    async def watch_failovers(self) -> None:
        """Note when the Redis server behind a shard changes (a failover or a restart)."""
        servers = await self.leases.servers()
        for shard, server in servers.items():
            if self.servers.get(shard, server) != server:
                self.failover_at[shard] = time.monotonic()
                log.warning("redis server changed shard=%d server=%s", shard, server)
        self.servers = servers

    def forget(self, shard: int) -> None:
        self.next_due.pop(shard, None)
        self.last_sweep.pop(shard, None)

    async def sweep_shard(self, shard: int) -> int:
        """Sweep one shard until nothing is due; returns how many notifications it fired."""
        fired = 0
        while True:
            lease = self.leases.held.get(shard)
            if lease is None:
                return fired
            started = time.perf_counter()
            try:
                swept = await run(self.redis, sweep_call(shard, lease, self.settings))
            except FencedError:
                log.warning("fenced: lease lost shard=%d pod=%s", shard, self.settings.pod_id)
                self.leases.drop(shard)
                self.forget(shard)
                return fired
            metrics.CHECK_DURATION.observe(time.perf_counter() - started)
            self.clock.observe(swept.now_ms)
            fired += swept.fired
            if swept.fired:
                log.debug(
                    "swept shard=%d fired=%d next_due=%s", shard, swept.fired, swept.next_due_ms
                )
            self.next_due[shard] = swept.next_due_ms
            self.last_sweep[shard] = int(time.time() * 1000)
            if not swept.more:
                return fired

    async def sweep_round(self, everything: bool) -> None:
        now = self.clock.now_ms()
        clock = time.monotonic()
        shards = [
            s
            for s in self.leases.held
            if (everything or self.next_due.get(s, 0) - self.wake_ahead_ms <= now)
            and self.hold_until.get(s, 0) <= clock
        ]
        await asyncio.gather(*(self.sweep_shard(s) for s in shards))
        if clock >= self.next_progress_write:  # the watchdog needs seconds, not every round
            progress.write(self.settings, self.last_sweep)
            self.next_progress_write = clock + PROGRESS_WRITE_S

    def sleep_s(self) -> float:
        soonest = min(self.next_due.values(), default=float("inf")) - self.wake_ahead_ms
        wait_ms = min(soonest - self.clock.now_ms(), self.settings.check_interval_ms)
        return max(0.0, wait_ms / 1000)

    async def run(self, stop: asyncio.Event, heartbeat: Heartbeat) -> None:
        renew_every = self.settings.leader_ttl_ms / 5000  # renew, and look for free shards
        next_renew = next_full = next_maintenance = 0.0
        backoff = Backoff()
        while not stop.is_set():
            try:
                clock = time.monotonic()
                if clock >= next_renew:
                    await self.rebalance()
                    next_renew = clock + renew_every
                everything = clock >= next_full
                await self.sweep_round(everything)
                if everything:
                    next_full = clock + self.settings.check_interval_ms / 1000
                if clock >= next_maintenance:
                    await maintenance.tidy(self.redis, sorted(self.leases.held))
                    next_maintenance = clock + MAINTENANCE_EVERY_S
                timeout = min(self.sleep_s(), max(0.0, next_renew - time.monotonic()))
                heartbeat.progress()
                backoff.reset()
            except RedisError as exc:  # renewal and sweeps resume once Redis answers
                report("sweeper", exc, heartbeat)
                await backoff.wait(stop)
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(self.wake, stop), timeout)

    async def listen_wakes(self, stop: asyncio.Event) -> None:
        """Cut the sleep short when a shard we lead gets an earlier deadline.

        Best effort: without it the sweeper still wakes every CHECK_INTERVAL_MS.
        """
        while not stop.is_set():
            client = None
            try:
                client = await cluster.pubsub_client(self.settings, self.redis)
                async with client.pubsub() as pubsub:
                    await pubsub.psubscribe(WAKE_CHANNEL_PREFIX + "*")
                    async for message in pubsub.listen():
                        if message["type"] == "pmessage":
                            self.on_wake(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("wake subscription lost, retrying error=%s", exc)
                await asyncio.sleep(1.0)
            finally:
                if client is not None and client is not self.redis:
                    await close(client)

    def on_wake(self, channel: str, data: str) -> None:
        shard = int(channel.removeprefix(WAKE_CHANNEL_PREFIX))
        due = float(data)
        if shard in self.next_due and due < self.next_due[shard]:
            self.next_due[shard] = due
            self.wake.set()


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def main(settings: Settings, stop: asyncio.Event) -> None:
    redis = connect(settings)
    sweeper = Sweeper(settings, redis)
    listener = asyncio.create_task(sweeper.listen_wakes(stop))
    heartbeat = Heartbeat(settings, "sweeper")
    delivery: tuple[StreamReader, asyncio.Task[None], Heartbeat] | None = None
    if settings.sweeper_delivers:
        delivery = _deliver_led_shards(settings, redis, sweeper, stop)
    log.info(
        "sweeper started pod=%s mode=%s shards=%d",
        settings.pod_id,
        settings.mode,
        settings.shard_count,
    )
    try:
        await sweeper.run(stop, heartbeat)
    finally:
        listener.cancel()
        if delivery is not None:  # it finishes the batch in hand, then sees stop
            reader, delivering, delivery_heartbeat = delivery
            await asyncio.gather(delivering, return_exceptions=True)
            await reader.close()
            delivery_heartbeat.clear()
        with contextlib.suppress(RedisError):
            await sweeper.leases.release_all()
        progress.clear(settings)
        heartbeat.clear()
        await close(redis)
        log.info("sweeper stopped pod=%s", settings.pod_id)
    if delivery is not None and not delivery[1].cancelled() and delivery[1].exception():
        raise RuntimeError("phase 1 delivery stopped") from delivery[1].exception()


def _deliver_led_shards(
    settings: Settings, redis: Client, sweeper: Sweeper, stop: asyncio.Event
) -> tuple[StreamReader, asyncio.Task[None], Heartbeat]:
    """Phase 1: the lease holder delivers what it enqueued, for the shards it leads. Only a
    lease holder reads a shard, so an entry idle half a lease TTL belongs to a holder that
    lost its lease: claim it then, not after DELIVERY_TIMEOUT_MS. A delivery loop that dies
    (a bug) stops the sweeper too, so that supervisord restarts the process."""
    sinks = build_sinks(settings, redis)
    pipeline = Pipeline(redis, settings, sinks, settings.pod_id, sweeper.layout, role="sweeper")
    reader = StreamReader(pipeline, settings.pod_id)
    led = functools.partial(sorted, sweeper.leases.held)
    idle = min(settings.delivery_timeout_ms, settings.leader_ttl_ms // 2)
    heartbeat = Heartbeat(settings, "sweeper-delivery")
    delivering = asyncio.create_task(
        serve(
            reader, settings, led, stop, heartbeat, role="sweeper", block_ms=100, claim_idle_ms=idle
        )
    )
    delivering.add_done_callback(lambda _: stop.set())
    return reader, delivering, heartbeat
