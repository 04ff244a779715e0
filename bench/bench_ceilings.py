"""Ceilings measured in the same run: what Redis itself does with -P 16 pipelining."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis as sync_redis

from bench.harness import redis_benchmark, settings_for
from bench.report import Report
from tests.support.redis_server import RedisServer
from tracker.model import AgentMessage
from tracker.settings import Settings
from tracker.state.store import APPLY, apply_call

BATCH = 64  # events per script call: 1000 events over 16 shards
# the sweep's entry: one field, conversation|level|generation|since|due|agent|message
ENTRY = ["e", "conv-__rand_int__|1|1|1764000000000|1764000030000|agent-1|m-__rand_int__"]


def test_ceiling_zadd(
    benchmark: Any, redis_server: RedisServer, redis_sync: sync_redis.Redis, report: Report
) -> None:
    command = ["ZADD", "bench:z", "__rand_int__", "conv-__rand_int__"]
    rate = benchmark.pedantic(redis_benchmark, args=(redis_server.port, command), rounds=1)
    benchmark.extra_info["ops_per_s"] = rate
    report.add("ceiling_zadd", rate, command=" ".join(command))


def test_ceiling_xadd(
    benchmark: Any, redis_server: RedisServer, redis_sync: sync_redis.Redis, report: Report
) -> None:
    command = ["XADD", "bench:s", "*", *ENTRY]
    rate = benchmark.pedantic(redis_benchmark, args=(redis_server.port, command), rounds=1)
    benchmark.extra_info["ops_per_s"] = rate
    report.add("ceiling_xadd", rate, command=" ".join(command))


def track_command(settings: Settings, events: int) -> list[str]:
    """EVALSHA apply.lua on shard 0 for `events` agent messages of new conversations (random
    ids)."""
    event = AgentMessage("conv-__rand_int__", "agent-1", "m-__rand_int__", 0)
    return [str(part) for part in apply_call(0, 0, [event] * events, settings).command()]


def test_ceiling_evalsha_track(
    benchmark: Any,
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    report: Report,
    tmp_path: Path,
) -> None:
    """The apply script on agent messages: one event per call (a lone request), and BATCH
    events per call (what Store.apply_many sends per shard for a 1000-event POST /events)."""
    redis_sync.script_load(APPLY.source)
    settings = settings_for(redis_server.url, tmp_path, TIMEOUT_INTERVAL_MS="30000")
    single = redis_benchmark(redis_server.port, track_command(settings, 1))
    calls = benchmark.pedantic(
        redis_benchmark,
        args=(redis_server.port, track_command(settings, BATCH), 20_000),
        rounds=1,
    )
    noop = redis_sync.script_load("return 1")
    floor = redis_benchmark(redis_server.port, ["EVALSHA", noop, "0"])
    detail = {"noop_script_calls_per_s": floor, "single_event_calls_per_s": single}
    benchmark.extra_info.update(events_per_s=calls * BATCH, **detail)
    report.add("ceiling_evalsha_track", calls * BATCH, events_per_call=BATCH, **detail)
