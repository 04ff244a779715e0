"""What the delivery history costs in Redis (issue 14): the bytes of history:{N} per
delivered notification and per restart, measured with MEMORY USAGE on the history hashes
around real deliveries (the sweep script, a stream reader and its pipeline, ack.lua's notes).

A fresh waiting conversation has no history (its period is its record: the waiting figure of
bench_memory.py is the whole cost); the first note of a conversation adds a hash field, the
later ones append a line to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

from bench import harness
from bench.report import Report
from tests.support.redis_server import RedisServer
from tracker.delivery.notification import Outgoing
from tracker.delivery.pipeline import Pipeline
from tracker.delivery.reader import StreamReader
from tracker.delivery.sinks import Outcomes
from tracker.model import AgentMessage
from tracker.redis.connection import Client, connect
from tracker.redis.keys import ShardKeys, shard_of
from tracker.redis.scripts import run
from tracker.settings import Settings
from tracker.state.store import Store
from tracker.timing.lease import acquire_call
from tracker.timing.sweeper import sweep_call

CONVERSATIONS = 20_000
SHARDS = 16
INTERVAL_MS = 60_000


class AcceptingSink:
    """Accepts everything at once, named like the webhook sink (its name is in the notes)."""

    name = "webhook"

    async def send(self, batch: Sequence[Outgoing]) -> Outcomes:
        return [None] * len(batch)

    async def close(self) -> None:
        return None


async def history_bytes(client: Client) -> int:
    total = 0
    for s in range(SHARDS):
        total += int(await client.memory_usage(ShardKeys.of(s).history, samples=0) or 0)
    return total


async def fire_and_deliver(client: Client, settings: Settings, reader: StreamReader) -> int:
    """Sweep every shard (level 1 of every conversation is due) and deliver what it staged."""
    fired = 0
    for s in range(SHARDS):
        lease = await run(client, acquire_call(s, "bench", 60_000))
        assert lease is not None
        while True:
            swept = await run(client, sweep_call(s, lease, settings, batch=1000))
            fired += swept.fired
            if not swept.more:
                break
    while await reader.read(list(range(SHARDS)), block_ms=None):
        pass
    assert await harness.pending_total(client, SHARDS) == 0
    return fired


async def measure(settings: Settings) -> dict[str, Any]:
    client = connect(settings)
    reader = StreamReader(Pipeline(client, settings, [AcceptingSink()], "bench"), "bench")
    try:
        for s in range(SHARDS):
            await reader.ensure_group(s)
        await reader.sync_clock()
        ids = [f"conv-{i:07d}" for i in range(CONVERSATIONS)]
        store = Store(client, settings)

        async def start(generation: int) -> None:
            since = await harness.redis_now_ms(client) - INTERVAL_MS - 1000  # level 1 due
            await harness.apply_all(
                store, [AgentMessage(c, "agent-1", f"m{generation}-{c}", since) for c in ids]
            )

        await start(1)
        waiting = await history_bytes(client)
        assert await fire_and_deliver(client, settings, reader) == CONVERSATIONS
        first = await history_bytes(client)
        await start(2)  # a newer agent message: the first period becomes a history line
        restarted = await history_bytes(client)
        assert await fire_and_deliver(client, settings, reader) == CONVERSATIONS
        second = await history_bytes(client)
        example = await client.hget(ShardKeys.of(shard_of(ids[0], SHARDS)).history, ids[0])
        return {
            "conversations": CONVERSATIONS,
            "waiting_bytes": waiting / CONVERSATIONS,
            "first_delivery_bytes": (first - waiting) / CONVERSATIONS,
            "restart_bytes": (restarted - first) / CONVERSATIONS,
            "later_delivery_bytes": (second - restarted) / CONVERSATIONS,
            "history_bytes_after_two_periods": second / CONVERSATIONS,
            "example_history": example,
        }
    finally:
        await reader.close()
        await client.aclose()


def test_history_bytes_per_delivered_notification(
    benchmark: Any, redis_server: RedisServer, report: Report, tmp_path: Path
) -> None:
    settings = harness.settings_for(
        redis_server.url,
        tmp_path,
        SHARD_COUNT=str(SHARDS),
        TIMEOUT_INTERVAL_MS=str(INTERVAL_MS),
        PREFETCH_MS="0",
    )
    result: list[dict[str, Any]] = []
    benchmark.pedantic(lambda: result.append(uvloop.run(measure(settings))), rounds=1)
    detail = result[0]
    benchmark.extra_info.update(detail)
    report.add("history_bytes_per_delivery", detail["first_delivery_bytes"], **detail)
