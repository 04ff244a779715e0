"""The 100K burst end to end: 100,000 timeouts due within 1 s, 50% answered before they are
due; a real sweeper and 2 consumer processes deliver the rest to a stream or a webhook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis as sync_redis
import uvloop

from bench import burst
from bench.report import Report
from tests.redis_server import RedisServer


def run(
    benchmark: Any, redis_url: str, workdir: Path, workload: burst.Workload
) -> burst.BurstResult:
    results: list[burst.BurstResult] = []

    def target() -> None:
        results.append(uvloop.run(burst.run(redis_url, workdir, workload)))

    benchmark.pedantic(target, rounds=1)
    result = results[0]
    detail = result.detail()
    benchmark.extra_info.update(detail)
    assert len(result.delivered) >= workload.expected, detail
    assert result.outside_window() == 0, detail
    return result


def test_burst_stream_sink(
    benchmark: Any,
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    report: Report,
    tmp_path: Path,
) -> None:
    result = run(benchmark, redis_server.url, tmp_path, burst.Workload(sink="stream"))
    detail = result.detail()
    report.add("burst_stream_rate", result.rate, **detail)
    report.add("burst_stream_p99", detail["lateness_ms"]["p99"], **detail["lateness_ms"])
    report.add(
        "commands_per_conversation",
        detail["commands_per_conversation"],
        commands=result.commands,
        conversations=result.workload.conversations,
        by_command=detail["commandstats_per_conversation"],
    )
    report.series["burst_stream"] = result.series()


def test_burst_webhook_sink(
    benchmark: Any,
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    report: Report,
    tmp_path: Path,
) -> None:
    result = run(benchmark, redis_server.url, tmp_path, burst.Workload(sink="webhook"))
    detail = result.detail()
    assert detail["signatures_checked"] > 0
    report.add("burst_webhook_rate", result.rate, **detail)
    late = detail["delivery_lateness_ms"]
    report.add("burst_webhook_p99", late["p99"], fired_p99=detail["lateness_ms"]["p99"], **late)
    report.series["burst_webhook"] = result.series()
