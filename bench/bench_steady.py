"""Lateness at a steady 200 fires/s with CHECK_INTERVAL_MS=1000: 1,600 timeouts due 5 ms
apart over 8 s, three times, none answered, fired by a real sweeper, delivered by 2 consumers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis as sync_redis
import uvloop

from bench import burst
from bench.report import Report
from tests.redis_server import RedisServer

RATE = 200
SECONDS = 8
ROUNDS = 3  # the median round (by p99) is reported
WORKLOAD = burst.Workload(
    conversations=RATE * SECONDS,
    window_ms=SECONDS * 1000,
    cancel_every=0,
    lead_s=3.0,
    sink="stream",
    check_interval_ms=1000,
)


def test_steady_200_per_s(
    benchmark: Any,
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    report: Report,
    tmp_path: Path,
) -> None:
    results: list[burst.BurstResult] = []

    def target() -> None:
        results.append(uvloop.run(burst.run(redis_server.url, tmp_path, WORKLOAD)))

    benchmark.pedantic(target, rounds=ROUNDS)
    for result in results:
        assert len(result.delivered) >= WORKLOAD.expected, result.detail()
        assert result.outside_window() == 0, result.detail()
    by_p99 = sorted(results, key=lambda r: r.detail()["lateness_ms"]["p99"])
    median = by_p99[len(by_p99) // 2]
    detail = median.detail()
    benchmark.extra_info.update(detail)
    late = detail["lateness_ms"]
    report.add(
        "steady_p99",
        late["p99"],
        fires_per_s=RATE,
        seconds=SECONDS,
        rounds_p99=[r.detail()["lateness_ms"]["p99"] for r in results],
        delivery_lateness_ms=detail["delivery_lateness_ms"],
        **late,
    )
    report.series["steady"] = median.series()
