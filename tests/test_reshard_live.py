"""`tracker reshard --to 32` on a running pod (8 shards) under a steady load of agent
messages, answers at once and answers between two levels: no notification lost, none
stale, every conversation in its new shard, and no program restarted."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis as sync_redis

from tests.support.faults import SPACED, agent, every_level, program_pids, where_are
from tests.support.load import Load, assert_healthy, pairs, pod_with_receiver, tally_settled
from tests.support.processes import post_events
from tests.support.redis_server import RedisServer
from tracker.redis.keys import LAYOUT, ShardKeys, shard_of

pytestmark = pytest.mark.slow

OFFSETS_MS = (1000, 5000, 9000)  # SPACED with the 1 s interval of FAST
TO = 32


async def test_reshard_from_8_to_32_under_load_loses_nothing_and_sends_nothing_stale(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    async with pod_with_receiver(redis_server.url, tmp_path, **SPACED) as (pod, receiver):
        pids = program_pids(pod)
        # 2,000 conversations at once, firing while they move; then ~12 s of steady load, a
        # third of it answered 2.5 s in, between levels 1 and 2, so a level 2 or 3 sent for
        # those would be stale.
        bulk = [f"rs-bulk-{i}" for i in range(2000)]
        for i in range(0, len(bulk), 500):
            await post_events(pod.base, [agent(c) for c in bulk[i : i + 500]])
        load = Load(pod.base, "rs", OFFSETS_MS)
        workers = asyncio.gather(*(load.worker(w, 150, 0.05, late_answer_s=2.5) for w in range(4)))
        await asyncio.sleep(2.0)
        command = [sys.executable, "-m", "tracker", "reshard", "--to", str(TO)]
        env = {**os.environ, **pod.env}
        done = await asyncio.to_thread(
            subprocess.run, command, env=env, capture_output=True, text=True, timeout=180
        )
        await workers
        print(done.stdout)
        assert done.returncode == 0, done.stdout + done.stderr
        assert set(load.statuses) == {200}, sorted(set(load.statuses))
        row, must, may = await tally_settled(
            f"reshard 8 -> {TO} shards under load",
            len(bulk) + len(load.acked_agent),
            load,
            receiver,
            also=every_level(bulk),
            timeout=30,
            quiet_s=1.0,  # anything stale would arrive by now
        )
        assert row.lost == 0, where_are(redis_sync, must - set(pairs(receiver)), TO)
        assert row.unexpected == 0, sorted(set(pairs(receiver)) - must - may)[:10]
        assert redis_sync.hgetall(LAYOUT) == {"count": str(TO), "epoch": "1"}
        holding = 0
        for shard in range(TO):
            k = ShardKeys.of(shard)
            ids = [str(c) for c in redis_sync.hkeys(k.records)]
            assert all(shard_of(c, TO) == shard for c in ids), shard
            assert not redis_sync.exists(k.moving)
            holding += bool(ids)
            assert redis_sync.exists(k.leader), f"shard {shard} has no leader"
        assert holding >= TO - 2  # spread over the new shards
        assert_healthy(pod, pids)
    assert "Traceback" not in pod.role.output(), pod.role.output()[-3000:]
