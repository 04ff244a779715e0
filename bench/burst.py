"""The issue's workload end to end: timeouts due within one window, some cancelled first,
fired by a real sweeper and delivered by real consumer processes to a stream or a webhook."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook

from bench import harness
from tests.processes import SECRET
from tests.redis_server import free_port
from tracker.connection import connect
from tracker.scripts import Scripts
from tracker.store import Store
from tracker.timefmt import parse_rfc3339_ms

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
class Delivered:
    """One delivered notification: when it was due, fired and delivered (ms since epoch)."""

    due_ms: int
    fired_ms: int
    delivered_ms: int


@dataclass
class BurstResult:
    workload: Workload
    first_due_ms: int
    schedule_s: float
    cancel_s: float
    scheduled_before_due: bool
    delivered: list[Delivered]
    commands: int
    commandstats: dict[str, int]
    delivery_s: float  # from the first due time until every notification was acknowledged
    redis_cpu_s: float  # Redis's CPU seconds over that same span
    redis_usec: dict[str, int]  # Redis's time by command over that span (scripts: EVALSHA)
    signatures_checked: int = 0

    @property
    def rate(self) -> float:
        """Notifications per second, from the first due time to the last delivery."""
        if not self.delivered:
            return 0.0
        last = max(d.delivered_ms for d in self.delivered)
        span_ms = max(last - self.first_due_ms, self.workload.window_ms)
        return len(self.delivered) * 1000 / span_ms

    def outside_window(self) -> int:
        """Deliveries whose due time is not in the workload's window (should be none)."""
        end = self.first_due_ms + self.workload.window_ms
        return sum(1 for d in self.delivered if not self.first_due_ms <= d.due_ms < end)

    def lateness(self) -> list[int]:
        return sorted(d.fired_ms - d.due_ms for d in self.delivered)

    def delivery_lateness(self) -> list[int]:
        return sorted(d.delivered_ms - d.due_ms for d in self.delivered)

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
            "delivery_lateness_ms": harness.summary(self.delivery_lateness()),
            "commands": self.commands,
            "commands_per_conversation": round(self.commands / n, 2),
            "commandstats_per_conversation": {
                k: round(v / n, 3) for k, v in self.commandstats.items()
            },
            "signatures_checked": self.signatures_checked,
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
                [d.delivered_ms for d in self.delivered], self.first_due_ms
            ),
            "due_per_s": harness.per_second([d.due_ms for d in self.delivered], self.first_due_ms),
        }


@dataclass
class FastReceiver:
    """A webhook endpoint that records arrival times; it checks the signatures of a sample."""

    port: int = field(default_factory=free_port)
    bodies: list[tuple[int, bytes]] = field(default_factory=list)
    sample: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append((int(time.time() * 1000), body))
        if len(self.sample) < 100:
            self.sample.append((body, dict(request.headers)))
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, backlog=2048).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def verify_sample(self) -> int:
        hook = Webhook(SECRET)
        for body, headers in self.sample:
            hook.verify(body, headers)  # raises on a bad signature
        return len(self.sample)

    def delivered(self) -> list[Delivered]:
        out = []
        for received_ms, body in self.bodies:
            event = orjson.loads(body)
            due = parse_rfc3339_ms(event["due_at"])
            out.append(Delivered(due, parse_rfc3339_ms(event["fired_at"]), received_ms))
        return out


async def read_stream(client: Redis, stream: str) -> list[Delivered]:
    """The outbound stream's entries; the entry id's milliseconds are the delivery time."""
    out: list[Delivered] = []
    start = "-"
    while True:
        entries: list[Any] = await client.xrange(stream, start, "+", count=10_000)  # type: ignore[assignment]
        for entry_id, fields in entries:
            out.append(
                Delivered(
                    parse_rfc3339_ms(fields["due_at"]),
                    parse_rfc3339_ms(fields["fired_at"]),
                    int(entry_id.split("-")[0]),
                )
            )
        if len(entries) < 10_000:
            return out
        start = "(" + entries[-1][0]


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
    receiver = FastReceiver()
    env = {
        "NOTIFY_SINK": workload.sink,
        "NOTIFY_STREAM": STREAM,
        "TIMEOUT_INTERVAL_MS": str(INTERVAL_MS),
        "CHECK_INTERVAL_MS": str(workload.check_interval_ms),
        "CONSUMER_PROCESSES": "2",
        "LOG_LEVEL": "WARNING",
    }
    if workload.sink == "webhook":
        await receiver.start()
        env.update(NOTIFY_WEBHOOK_URL=receiver.url, NOTIFY_WEBHOOK_SECRET=SECRET)
    settings = harness.settings_for(
        redis_url, workdir / "client", TIMEOUT_INTERVAL_MS=str(INTERVAL_MS)
    )
    client = connect(settings)
    await client.flushall()
    pipeline = harness.Pipeline(redis_url, workdir, **env)
    try:
        await harness.wait_pipeline_ready(client, settings.shard_count)
        scripts = Scripts()
        for script in scripts.all():  # warm, as in a running pod: no NOSCRIPT reruns
            await client.script_load(script.source)
        store = Store(client, settings, scripts)
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
        await _wait_delivered(client, receiver, workload)
        await _wait_acked(client, settings.shard_count)
        delivery_s = time.monotonic() - due_clock
        redis_cpu = await harness.redis_cpu_s(client) - cpu_at_due
        usec = harness.stats_delta(await harness.commandstats(client, "usec"), usec_at_due)
        commands = await harness.total_commands(client) - commands_before
        stats = harness.stats_delta(await harness.commandstats(client), stats_before)
        if workload.sink == "webhook":
            delivered = receiver.delivered()
            checked = receiver.verify_sample()
        else:
            delivered = await read_stream(client, STREAM)
            checked = 0
    finally:
        pipeline.stop()
        await receiver.stop()
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
        checked,
    )


async def _wait_delivered(client: Redis, receiver: FastReceiver, workload: Workload) -> None:
    deadline = time.monotonic() + workload.lead_s + workload.timeout_s
    count = 0
    while time.monotonic() < deadline:
        if workload.sink == "webhook":
            count = len(receiver.bodies)
        else:
            count = int(await client.xlen(STREAM))
        if count >= workload.expected:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{count} of {workload.expected} notifications arrived in time")


async def _wait_acked(client: Redis, shard_count: int) -> None:
    deadline = time.monotonic() + 30.0
    while await harness.pending_total(client, shard_count) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
