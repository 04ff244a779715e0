"""The issue's workload end to end: timeouts due within one window, some cancelled first,
fired by a real sweeper and delivered by real consumer processes to a stream or a webhook."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import harness
from bench.downstream import Arrival, Downstream
from tracker.redis.connection import Client, connect
from tracker.redis.scripts import LOADED
from tracker.state.store import Store

INTERVAL_MS = 60_000  # level 2 is a minute away: one level fires per conversation in a run
STREAM = "bench_notifications"


@dataclass(frozen=True)
class Workload:
    conversations: int = 100_000
    window_ms: int = 1000  # due times spread evenly over this window
    cancel_every: int = 2  # every 2nd conversation is answered before it is due (50%)
    lead_s: float = 10.0  # first due time after the start of scheduling
    sink: str = "stream"  # stream | webhook
    check_interval_ms: int = 1000
    timeout_s: float = 120.0

    @property
    def expected(self) -> int:
        if self.cancel_every <= 0:
            return self.conversations
        return self.conversations - len(range(0, self.conversations, self.cancel_every))


@dataclass
class BurstResult:
    workload: Workload
    first_due_ms: int
    schedule_s: float
    cancel_s: float
    scheduled_before_due: bool
    delivered: list[Arrival]  # what the user (the reader, the receiver) got, and when
    commands: int
    commandstats: dict[str, int]
    delivery_s: float  # from the first due time until every notification was acknowledged
    redis_cpu_s: float  # Redis's CPU seconds over that same span
    redis_usec: dict[str, int]  # Redis's time by command over that span (scripts: EVALSHA)

    @property
    def rate(self) -> float:
        """Notifications per second, from the first due time to the last delivery."""
        if not self.delivered:
            return 0.0
        last = max(d.received_ms for d in self.delivered)
        span_ms = max(last - self.first_due_ms, self.workload.window_ms)
        return len(self.delivered) * 1000 / span_ms

    def outside_window(self) -> int:
        """Deliveries whose due time is not in the workload's window (should be none)."""
        end = self.first_due_ms + max(self.workload.window_ms, 1)
        return sum(1 for d in self.delivered if not self.first_due_ms <= d.due_ms < end)

    def arrivals(self) -> list[Arrival]:
        return self.delivered

    def lateness(self) -> list[int]:
        """When the user got it (the reader, the receiver) minus when it was due."""
        return sorted(d.received_ms - d.due_ms for d in self.delivered)

    def fired_lateness(self) -> list[int]:
        """The notification's own fired_at minus its due time."""
        return sorted(d.fired_ms - d.due_ms for d in self.delivered)

    def handoff(self) -> list[int]:
        """From fired_at to the user."""
        return sorted(d.received_ms - d.fired_ms for d in self.delivered)

    def detail(self) -> dict[str, Any]:
        n = self.workload.conversations
        return {
            "conversations": n,
            "expected": self.workload.expected,
            "delivered": len(self.delivered),
            "outside_window": self.outside_window(),
            "sink": self.workload.sink,
            "window_ms": self.workload.window_ms,
            "schedule_s": round(self.schedule_s, 3),
            "cancel_s": round(self.cancel_s, 3),
            "scheduled_before_due": self.scheduled_before_due,
            "rate_per_s": round(self.rate),
            "lateness_ms": harness.summary(self.lateness()),
            "fired_lateness_ms": harness.summary(self.fired_lateness()),
            "handoff_ms": harness.summary(self.handoff()),
            "commands": self.commands,
            "commands_per_conversation": round(self.commands / n, 2),
            "commandstats_per_conversation": {
                k: round(v / n, 3) for k, v in self.commandstats.items()
            },
            "delivery_s": round(self.delivery_s, 3),
            "redis_cpu_during_delivery": round(self.redis_cpu_s / self.delivery_s, 3),
            "redis_ms_during_delivery": {
                k: round(v / 1000) for k, v in list(self.redis_usec.items())[:8]
            },
        }

    def series(self) -> dict[str, Any]:
        return {
            "lateness_cdf": harness.cdf(self.lateness()),
            "delivered_per_s": harness.per_second(
                [d.received_ms for d in self.delivered], self.first_due_ms
            ),
            "due_per_s": harness.per_second([d.due_ms for d in self.delivered], self.first_due_ms),
        }


async def run(
    redis_url: str,
    workdir: Path,
    workload: Workload,
    on_due: Callable[[Any], Any] | None = None,
) -> BurstResult:
    """Start the pipeline, schedule and cancel, wait for every notification, collect.

    ``on_due(pipeline)`` is called (and awaited when it returns an awaitable) just before the
    first due time; the profiler uses it to attach to the processes.
    """
    env = {
        "NOTIFY_SINK": workload.sink,
        "NOTIFY_STREAM": STREAM,
        "TIMEOUT_INTERVAL_MS": str(INTERVAL_MS),
        "CHECK_INTERVAL_MS": str(workload.check_interval_ms),
        "CONSUMER_PROCESSES": "2",
        "LOG_LEVEL": "WARNING",
    }
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    user = Downstream(workload.sink, workload.expected, workdir / "downstream", port, STREAM)
    user.start()
    if workload.sink == "webhook":
        env.update(NOTIFY_WEBHOOK_URL=user.url, NOTIFY_WEBHOOK_SECRET=user.secret)
    settings = harness.settings_for(
        redis_url, workdir / "client", TIMEOUT_INTERVAL_MS=str(INTERVAL_MS)
    )
    client = connect(settings)
    await client.flushall()
    pipeline = harness.Pipeline(redis_url, workdir, **env)
    try:
        await harness.wait_pipeline_ready(client, settings.shard_count)
        for script in LOADED.values():  # warm, as in a running pod: no NOSCRIPT reruns
            await client.script_load(script.source)
        store = Store(client, settings)
        commands_before = await harness.total_commands(client)
        stats_before = await harness.commandstats(client)
        first_due = await harness.redis_now_ms(client) + int(workload.lead_s * 1000)
        n = workload.conversations
        stamps = [first_due + i * workload.window_ms // n - INTERVAL_MS for i in range(n)]
        messages = harness.starts(f"b{first_due}", n, stamps)
        schedule_s = await harness.apply_all(store, messages)
        cancel_s = (
            await harness.apply_all(store, harness.cancels(messages[:: workload.cancel_every]))
            if workload.cancel_every > 0
            else 0.0
        )
        scheduled_before_due = await harness.redis_now_ms(client) < first_due
        await asyncio.sleep(max(0.0, (first_due - await harness.redis_now_ms(client)) / 1000))
        cpu_at_due = await harness.redis_cpu_s(client)
        usec_at_due = await harness.commandstats(client, "usec")
        due_clock = time.monotonic()
        if on_due is not None:
            started = on_due(pipeline)
            if asyncio.iscoroutine(started):
                await started
        arrivals = await asyncio.to_thread(user.arrivals)
        await _wait_acked(client, settings.shard_count)
        delivery_s = time.monotonic() - due_clock
        redis_cpu = await harness.redis_cpu_s(client) - cpu_at_due
        usec = harness.stats_delta(await harness.commandstats(client, "usec"), usec_at_due)
        commands = await harness.total_commands(client) - commands_before
        stats = harness.stats_delta(await harness.commandstats(client), stats_before)
        delivered = arrivals
    finally:
        pipeline.stop()
        user.stop()
        await client.aclose()
    assert not pipeline.tracebacks(), pipeline.tracebacks()[-3000:]
    return BurstResult(
        workload,
        first_due,
        schedule_s,
        cancel_s,
        scheduled_before_due,
        delivered,
        commands,
        stats,
        delivery_s,
        redis_cpu,
        usec,
    )


async def _wait_acked(client: Client, shard_count: int) -> None:
    deadline = time.monotonic() + 30.0
    while await harness.pending_total(client, shard_count) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
