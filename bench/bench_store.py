"""Scheduling and cancelling through Store.apply_many directly (no HTTP): 100K starts, then
50K answers, in batches of 1000 with 4 batches in flight, on one uvloop."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import redis as sync_redis
import uvloop

from bench import harness
from bench.report import Report
from tests.support.redis_server import RedisServer
from tracker.redis.connection import connect
from tracker.state.store import Store

CONVERSATIONS = 100_000
ROUNDS = 3


async def one_round(redis_url: str, run_dir: Path, prefix: str) -> tuple[float, float]:
    settings = harness.settings_for(redis_url, run_dir)
    client = connect(settings)
    try:
        await client.flushall()
        store = Store(client, settings)
        messages = harness.starts(prefix, CONVERSATIONS)
        answers = harness.cancels(messages[::2])
        schedule_s = await harness.apply_all(store, messages)
        cancel_s = await harness.apply_all(store, answers)
        assert await client.zcard("waiting_conversations:{0}") > 0
    finally:
        await client.aclose()
    return len(messages) / schedule_s, len(answers) / cancel_s


def test_store_schedule_and_cancel(
    benchmark: Any,
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    report: Report,
    tmp_path: Path,
) -> None:
    rates: list[tuple[float, float]] = []

    def target() -> None:
        prefix = f"s{len(rates)}"
        rates.append(uvloop.run(one_round(redis_server.url, tmp_path, prefix)))

    benchmark.pedantic(target, rounds=ROUNDS)
    schedule = statistics.median(r[0] for r in rates)
    cancel = statistics.median(r[1] for r in rates)
    benchmark.extra_info.update(schedule_per_s=schedule, cancel_per_s=cancel)
    rounds = [round(r[0]) for r in rates]
    report.add(
        "store_schedule",
        schedule,
        rounds=rounds,
        conversations=CONVERSATIONS,
        batch=harness.CHUNK,
        in_flight=harness.IN_FLIGHT,
    )
    report.add(
        "store_cancel",
        cancel,
        rounds=[round(r[1]) for r in rates],
        answers=CONVERSATIONS // 2,
        batch=harness.CHUNK,
        in_flight=harness.IN_FLIGHT,
    )
