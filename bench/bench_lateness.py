"""Lateness where the user is, for every sink and workload, with BullMQ 6.7 and the bare mover
on the same workload in the same run: the outbound stream read by a separate reader process
(XREAD, stamped on read), the webhook received by a separate receiver process (every
signature checked). 100,000 conversations a workload, half answered before they are due.

| workload | due times | delivered (half answered) |
|---|---|---|
| spread  | over 1 s     | 50,000 at 50,000/s |
| same_ms | the same ms  | 50,000 at once |
| steady  | over 5 s, 2,000 conversations | 1,000 at 200/s |
| 10k     | over 5 s, webhook | 50,000 at 10,000/s |
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import uvloop

from bench import burst, competitors
from bench.competitors import Outcome
from bench.report import Report
from tests.support.redis_server import RedisServer

WORKLOADS = {
    "spread": burst.Workload(window_ms=1000),
    "same_ms": burst.Workload(window_ms=0),
    "steady": burst.Workload(conversations=2000, window_ms=5000, lead_s=3.0),
    "10k": burst.Workload(window_ms=5000),
}
CASES = [
    ("spread", "stream"),
    ("same_ms", "stream"),
    ("steady", "stream"),
    ("spread", "webhook"),
    ("same_ms", "webhook"),
    ("10k", "webhook"),
]


def workload(name: str, sink: str) -> burst.Workload:
    return dataclasses.replace(WORKLOADS[name], sink=sink)


def tracker(
    benchmark: Any, server: RedisServer, workdir: Path, w: burst.Workload
) -> burst.BurstResult:
    results: list[burst.BurstResult] = []

    def target() -> None:
        results.append(uvloop.run(burst.run(server.url, workdir, w)))

    benchmark.pedantic(target, rounds=1)
    result = results[0]
    assert len(result.delivered) >= w.expected, result.detail()
    assert result.outside_window() == 0, result.detail()
    return result


def record(report: Report, case: str, outcome: Outcome) -> None:
    late = outcome.lateness()
    report.add(f"{case}:{outcome.system}:rate", outcome.rate, **late)
    report.add(f"{case}:{outcome.system}:p50", late["p50"])
    report.add(f"{case}:{outcome.system}:p99", late["p99"])


@pytest.mark.parametrize(("name", "sink"), CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_lateness_at_the_user(
    benchmark: Any,
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    report: Report,
    tmp_path: Path,
    name: str,
    sink: str,
) -> None:
    case = f"{name}_{sink}"
    w = workload(name, sink)
    result = tracker(benchmark, redis_server, tmp_path / "tracker", w)
    detail = result.detail()
    benchmark.extra_info.update(detail)
    ours = Outcome("tracker", w, result.first_due_ms, result.arrivals())
    record(report, case, ours)
    report.add(f"{case}:tracker:fired_p99", detail["fired_lateness_ms"]["p99"])
    report.add(f"{case}:tracker:handoff_p99", detail["handoff_ms"]["p99"])
    report.add(f"{case}_rate", ours.rate, **detail)
    report.add(f"{case}_p99", ours.lateness()["p99"], **detail["lateness_ms"])
    report.series[case] = result.series()
    if case == "spread_stream":
        report.add(
            "commands_per_conversation",
            detail["commands_per_conversation"],
            commands=result.commands,
            conversations=w.conversations,
            by_command=detail["commandstats_per_conversation"],
        )
    if competitors.node_available():
        record(report, case, competitors.run_bullmq(redis_server.port, tmp_path, w))
    if sink == "stream":
        record(report, case, competitors.run_bare(redis_server.port, tmp_path, w))
    if case in ("spread_webhook", "same_ms_webhook") and f"{case}:BullMQ:rate" in report.values:
        ratio = ours.rate / report.values[f"{case}:BullMQ:rate"]
        report.add(f"{case}_vs_bullmq", ratio, ratio=ratio)
