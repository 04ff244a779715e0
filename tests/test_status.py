"""`tracker status` (tracker.ops.status): what it reports and when it calls the tracker
degraded, against a real Redis; and its text table with Kubernetes-long pod names."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import redis as sync_redis
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.support.redis_server import RedisServer
from tracker.ops import status
from tracker.ops.cli import status_text
from tracker.pod import heartbeat
from tracker.redis.keys import CONSUMER_GROUP, LAYOUT, ShardKeys
from tracker.settings import Settings

SHARDS = 4
LONG_POD = "tracker-5d8c7f9b6d-kx2vq-a-very-long-deployment-name-in-a-long-namespace"


def four_shards(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return make_settings(redis_server.url, tmp_path / "run", SHARD_COUNT=str(SHARDS))


def lead_all(client: sync_redis.Redis, pod: str = LONG_POD) -> None:
    for n in range(SHARDS):
        client.set(ShardKeys.of(n).leader, f"{pod}|{n + 1}", px=10_000)


def now_ms(client: sync_redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_led_idle_tracker_is_healthy(
    redis: Redis, redis_sync: sync_redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    lead_all(redis_sync)
    report = await status.report(redis, four_shards(redis_server, tmp_path))
    assert report["problems"] == []
    assert report["healthy"] is True
    assert status.exit_code(report) == 0
    assert [s["leader"] for s in report["shards"]] == [LONG_POD] * SHARDS
    (node,) = report["redis"]
    assert node["role"] == "master"
    assert node["read_only"] is False
    assert node["loading"] is False
    assert node["used_memory"] > 0
    assert node["version"] == redis_sync.info()["redis_version"]


async def test_each_kind_of_trouble_is_a_problem(
    redis: Redis, redis_sync: sync_redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = four_shards(redis_server, tmp_path)
    lead_all(redis_sync)
    redis_sync.delete(ShardKeys.of(2).leader)
    now = now_ms(redis_sync)
    late = status.overdue_limit_ms(settings) + 60_000
    redis_sync.zadd(ShardKeys.of(1).waiting, {"conv-late": now - late})
    k3 = ShardKeys.of(3)
    redis_sync.xgroup_create(k3.outbox, CONSUMER_GROUP, id="0", mkstream=True)
    redis_sync.xadd(k3.outbox, {"e": f"conv-unread|1|1|{now - late - 1}|{now - late}|a|m"})
    k0 = ShardKeys.of(0)
    redis_sync.xgroup_create(k0.outbox, CONSUMER_GROUP, id="0", mkstream=True)
    redis_sync.xadd(k0.outbox, {"e": f"conv-stuck|1|1|{now - late - 1}|{now - late}|a|m"})
    redis_sync.xreadgroup(CONSUMER_GROUP, "c-0", {k0.outbox: ">"})
    redis_sync.xadd(k0.dead_letters, {"reason": "permanent: HTTP 410", "c": "x"})
    redis_sync.hset(LAYOUT, mapping={"count": SHARDS, "epoch": 2})
    redis_sync.set(ShardKeys.of(1).epoch, 3)  # a reshard fenced it past the layout

    report = await status.report(redis, settings)
    assert report["healthy"] is False
    assert status.exit_code(report) == 1
    problems = "\n".join(report["problems"])
    assert "shards without a leader: 2" in problems
    assert "shard 1: earliest waiting deadline is 1m" in problems
    assert "shard 3: oldest unread notification is 1m" in problems
    assert "shard 0: oldest pending notification is 1m" in problems
    assert "1 dead letters waiting" in problems
    assert "shard 1 refuses writes: its epoch 3 is above the layout's" in problems
    shards = report["shards"]
    assert shards[1]["refuses_writes"] is True
    assert shards[3]["backlog"] == 1
    assert shards[0]["pending"] == 1
    assert report["totals"] == {"waiting": 1, "backlog": 1, "pending": 1, "dead_letters": 1}


async def test_a_full_redis_and_an_evicting_policy_are_problems(
    redis: Redis, redis_sync: sync_redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    lead_all(redis_sync)
    used = int(redis_sync.info("memory")["used_memory"])
    redis_sync.config_set("maxmemory", int(used * 1.05))
    redis_sync.config_set("maxmemory-policy", "allkeys-lru")
    try:
        report = await status.report(redis, four_shards(redis_server, tmp_path))
    finally:
        redis_sync.config_set("maxmemory", 0)
        redis_sync.config_set("maxmemory-policy", "noeviction")
    problems = "\n".join(report["problems"])
    assert "redis: memory at 9" in problems  # 9x% of maxmemory
    assert "maxmemory-policy allkeys-lru may evict data" in problems


async def test_a_replica_is_read_only(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    """Pointed at a replica (a failover the client has not followed): writes are refused."""
    replica = RedisServer(tmp_path / "replica")
    replica.extra = ["--replicaof", "127.0.0.1", str(redis_server.port)]
    replica.start()
    try:
        client = Redis.from_url(replica.url, decode_responses=True)
        try:
            nodes = await status.redis_nodes(client)
        finally:
            await client.aclose()
    finally:
        replica.stop()
    assert nodes[0]["role"] == "slave"
    assert nodes[0]["read_only"] is True


async def test_this_pods_role_processes_are_shown(
    redis: Redis, redis_sync: sync_redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    lead_all(redis_sync)
    settings = four_shards(redis_server, tmp_path)
    healthy = heartbeat.Heartbeat(settings, "sweeper")
    healthy.progress()
    failing = heartbeat.Heartbeat(settings, "consumer-1")
    failing.progress()
    failing.failed("readonly", "READONLY You can't write against a read only replica.")
    report = await status.report(redis, settings)
    roles = {r["name"]: r for r in report["roles"]}
    assert roles["sweeper"]["state"] == "ok"
    assert roles["sweeper"]["pid"] == os.getpid()
    assert roles["consumer-1"]["state"] == "backing_off"
    assert roles["consumer-1"]["error_kind"] == "readonly"
    assert "role consumer-1: backing off from readonly" in "\n".join(report["problems"])
    text = status_text(report)
    assert "READONLY You can't write" in text


async def test_a_role_whose_loop_stopped_writing_is_silent(
    redis: Redis, redis_sync: sync_redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    lead_all(redis_sync)
    settings = four_shards(redis_server, tmp_path)
    beat = heartbeat.Heartbeat(settings, "sweeper")
    beat.progress()
    stale = int(time.time() * 1000) - status.ROLE_SILENT_MS - 5000
    data = orjson.loads(beat.path.read_bytes())
    beat.path.write_bytes(orjson.dumps({**data, "written_ms": stale, "progress_ms": stale}))
    report = await status.report(redis, settings)
    assert [(r["state"], r["progress_age_ms"] // 1000) for r in report["roles"]] == [("silent", 15)]
    assert f"role sweeper: silent (pid {os.getpid()})" in report["problems"]


async def test_a_role_whose_process_is_gone_is_reported(
    redis: Redis, redis_sync: sync_redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    lead_all(redis_sync)
    settings = four_shards(redis_server, tmp_path)
    beat = heartbeat.Heartbeat(settings, "consumer-0")
    beat.progress()
    data = beat.path.read_text().replace(f'"pid":{os.getpid()}', '"pid":999999999')
    beat.path.write_text(data)
    report = await status.report(redis, settings)
    assert [r["state"] for r in report["roles"]] == ["exited"]


async def test_the_text_table_keeps_its_columns_with_long_pod_names(
    redis: Redis, redis_sync: sync_redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    lead_all(redis_sync)
    redis_sync.delete(ShardKeys.of(1).leader)
    redis_sync.zadd(ShardKeys.of(2).waiting, {"c": now_ms(redis_sync) + 60_000})
    text = status_text(await status.report(redis, four_shards(redis_server, tmp_path)))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("shard "))
    rows = lines[header : header + 1 + SHARDS]
    # Every row has the same cells in the same columns: each column's right edge (numbers
    # are right-aligned) is where the header's column name ends.
    waiting_end = rows[0].index("waiting") + len("waiting")
    for row in rows[1:]:
        assert len(row.split()) == 8, row
        assert row[waiting_end - 1] != " ", (row, waiting_end)
        assert row[waiting_end] == " "
    assert LONG_POD in rows[1]
    assert "NONE" in rows[2]
    assert time.strftime("%Y") in lines[0]
