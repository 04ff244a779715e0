"""Sweep throughput on Redis Cluster with 1, 2 and 3 masters (issue 6).

Each round loads 60,000 conversations whose level 1 is already due into a cluster of that
many masters (no replicas), takes all 16 shard leases, and times the sweep scripts moving
every due conversation into its shard stream, all shards swept concurrently. On this
2-core machine every master shares the same two cores, so this shows the tracker spreading
its work over masters, not the speed-up real separate hosts would give.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import uvloop

from bench import harness
from bench.report import Report
from tests.support.redis_cluster import RedisCluster
from tracker.redis.connection import connect
from tracker.redis.scripts import run
from tracker.settings import Settings
from tracker.state.store import Store
from tracker.timing.lease import acquire_call
from tracker.timing.sweeper import sweep_call

CONVERSATIONS = 60_000
SHARDS = 16
INTERVAL_MS = 60_000


async def sweep_all(settings: Settings) -> tuple[int, float]:
    """Load, take every lease, then sweep every shard until nothing is due."""
    client = connect(settings)
    try:
        seconds, micros = await client.time()
        due_since = int(seconds) * 1000 + int(micros) // 1000 - INTERVAL_MS - 1000
        store = Store(client, settings)
        messages = harness.starts("m", CONVERSATIONS, [due_since] * CONVERSATIONS)
        await harness.apply_all(store, messages)
        leases = {}
        for n in range(SHARDS):
            lease = await run(client, acquire_call(n, "bench", 60_000))
            assert lease is not None
            leases[n] = lease

        async def sweep(n: int) -> int:
            fired = 0
            while True:
                swept = await run(client, sweep_call(n, leases[n], settings, batch=1000))
                fired += swept.fired
                if not swept.more:
                    return fired

        started = time.perf_counter()
        counts = await asyncio.gather(*(sweep(n) for n in range(SHARDS)))
        return sum(counts), time.perf_counter() - started
    finally:
        await client.aclose()


@pytest.mark.parametrize("masters", [1, 2, 3])
def test_sweep_throughput_by_masters(
    benchmark: Any, masters: int, report: Report, tmp_path: Path
) -> None:
    cluster = RedisCluster(tmp_path / "cluster", masters=masters, replicas=0)
    cluster.start()
    try:
        settings = harness.settings_for(
            cluster.url,
            tmp_path / "run",
            REDIS_MODE="cluster",
            SHARD_COUNT=str(SHARDS),
            TIMEOUT_INTERVAL_MS=str(INTERVAL_MS),
        )
        result: list[tuple[int, float]] = []
        benchmark.pedantic(lambda: result.append(uvloop.run(sweep_all(settings))), rounds=1)
        fired, seconds = result[0]
        assert fired == CONVERSATIONS
        rate = fired / seconds
        benchmark.extra_info.update(masters=masters, fired=fired, sweep_per_s=rate)
        report.add(f"sweep_masters_{masters}", rate, conversations=CONVERSATIONS)
    finally:
        cluster.stop()
