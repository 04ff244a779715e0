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
from tests.redis_cluster import RedisCluster
from tracker.redis.connection import connect
from tracker.redis.keys import ShardKeys
from tracker.redis.scripts import Scripts
from tracker.settings import Settings
from tracker.state.store import Store

CONVERSATIONS = 60_000
SHARDS = 16
INTERVAL_MS = 60_000


async def sweep_all(settings: Settings) -> tuple[int, float]:
    """Load, take every lease, then sweep every shard until nothing is due."""
    client = connect(settings)
    scripts = Scripts()
    try:
        seconds, micros = await client.time()
        due_since = int(seconds) * 1000 + int(micros) // 1000 - INTERVAL_MS - 1000
        store = Store(client, settings, scripts)
        messages = harness.starts("m", CONVERSATIONS, [due_since] * CONVERSATIONS)
        await harness.apply_all(store, messages)
        leases = {}
        for n in range(SHARDS):
            k = ShardKeys.of(n)
            taken, value = await scripts.lease_acquire.run(client, k.for_lease, ["bench", 60_000])
            assert int(taken)
            leases[n] = str(value)
        args = [1000, *settings.level_multipliers, settings.answered_retention_ms]

        async def sweep(n: int) -> int:
            k = ShardKeys.of(n)
            keys = k.for_sweep
            fired = 0
            while True:
                moved, _, _, more = await scripts.sweep.run(client, keys, [leases[n], *args])
                fired += int(moved)
                if not int(more):
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
