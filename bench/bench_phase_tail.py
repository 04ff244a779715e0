"""Issue 18's workload, ten times over with fresh processes, in each mode: `python -m tracker
api` and `sweeper` (and, in phase 2, two consumers) on one Redis, TIMEOUT_INTERVAL_MS=1000,
CHECK_INTERVAL_MS=1000, LEADER_ELECTION_TTL=2, the webhook sink to a receiver in its own
process that answers 100 ms late (a receiver some way off); 300 conversations started at the
same instant by concurrent requests in two waves (two start times a few ms apart, as
concurrent requests batched by the API get), 150 answered at once.

The figure is the worst `fired_at - due_at` of any run (target: under 50 ms); the detail
keeps each run's per-level (min, median, max). Before the fix, half of every level fired one
webhook answer late: the releaser waited for a batch's answers before taking what fell due
a few milliseconds after it.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as sync_redis

from bench.downstream import Downstream
from bench.report import Report
from tests.support.processes import Role, role_env
from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import wait_http

RUNS = 10
CONVERSATIONS = 300
RECEIVER_DELAY_MS = 100
WAVE_GAP_S = 0.005
SETTINGS = {
    "TIMEOUT_INTERVAL_MS": "1000",
    "CHECK_INTERVAL_MS": "1000",
    "LEADER_ELECTION_TTL": "2",
    "NOTIFY_SINK": "webhook",
    "LOG_LEVEL": "WARNING",
}

Levels = dict[int, tuple[int, int, int]]  # level -> (min, median, max) of fired_at - due_at


async def burst(base: str, prefix: str) -> None:
    ids = [f"{prefix}-{i}" for i in range(CONVERSATIONS)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def post(path: str, body: dict[str, str]) -> None:
            async with session.post(f"{base}{path}", json=body) as resp:
                assert resp.status == 200, await resp.text()

        agent = {"agent_id": "agent-1", "message_id": "m"}
        half = len(ids) // 2  # two waves of concurrent requests: two start times, ms apart
        first = [
            asyncio.create_task(post(f"/conversations/{c}/agent-message", agent))
            for c in ids[:half]
        ]
        await asyncio.sleep(WAVE_GAP_S)
        second = [post(f"/conversations/{c}/agent-message", agent) for c in ids[half:]]
        await asyncio.gather(*first, *second)
        answer = {"customer_id": "customer-1", "message_id": "r"}
        await asyncio.gather(
            *(post(f"/conversations/{c}/customer-response", answer) for c in ids[::2])
        )


async def one_run(server: RedisServer, workdir: Path, mode: str, n: int) -> Levels:
    server.client().flushall()
    expected = CONVERSATIONS // 2 * 3
    user = Downstream("webhook", expected, workdir / "receiver", server.port)
    user.delay_ms = RECEIVER_DELAY_MS
    user.start()
    port = free_port()
    env = role_env(
        server.url,
        workdir / "run",
        POD_ID=f"tail-{n}",
        PORT=str(port),
        MODE=mode,
        NOTIFY_WEBHOOK_URL=user.url,
        NOTIFY_WEBHOOK_SECRET=user.secret,
        **SETTINGS,
    )
    roles = [Role(["api"], env, workdir / "api.log"), Role(["sweeper"], env, workdir / "sw.log")]
    if mode == "phase2":
        roles += [Role(["consumer", "--index", str(i)], env, workdir / f"c{i}.log") for i in (0, 1)]
    try:
        await wait_http(f"http://127.0.0.1:{port}/ready", timeout=30)
        await burst(f"http://127.0.0.1:{port}", f"run{n}")
        arrivals = await asyncio.to_thread(user.arrivals)
    finally:
        for role in roles:
            role.stop()
        user.stop()
    first = min(a.due_ms for a in arrivals)
    late: dict[int, list[int]] = collections.defaultdict(list)
    for a in arrivals:
        late[round((a.due_ms - first) / 1000) + 1].append(a.fired_ms - a.due_ms)
    return {lvl: (min(v), sorted(v)[len(v) // 2], max(v)) for lvl, v in sorted(late.items())}


@pytest.mark.parametrize("mode", ["phase1", "phase2"])
def test_the_worst_of_ten_bursts(
    benchmark: Any,
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    report: Report,
    tmp_path: Path,
    mode: str,
) -> None:
    runs: list[Levels] = []

    def target() -> None:
        for n in range(RUNS):
            runs.append(asyncio.run(one_run(redis_server, tmp_path / f"run{n}", mode, n)))

    benchmark.pedantic(target, rounds=1)
    worst = max(hi for levels in runs for _, _, hi in levels.values())
    benchmark.extra_info["runs"] = runs
    report.add(f"{mode}_tail_worst", worst, runs=[str(r) for r in runs])
    for run in runs:
        print(f"{mode}: {run}")
