"""Redis memory per waiting conversation: 1,000,000 agent messages through the apply script
(50 a call), mass-inserted with `redis-cli --pipe`; INFO memory used_memory before and after."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import redis as sync_redis

from bench.report import Report
from tests.redis_server import RedisServer
from tracker.redis.keys import ShardKeys, shard_of, wake_channel
from tracker.redis.scripts import Script
from tracker.state.store import AgentMessage, apply_arg

CONVERSATIONS = 1_000_000
SHARDS = 16
CHUNK = 1000  # script calls per write to redis-cli
PER_CALL = 50  # conversations per script call


def resp(parts: list[str]) -> str:
    """One command in the Redis protocol (every part here is ASCII)."""
    return f"*{len(parts)}\r\n" + "".join(f"${len(p)}\r\n{p}\r\n" for p in parts)


def track_commands(sha: str, n: int) -> Iterator[bytes]:
    """EVALSHA apply for n new conversations (timestamp 0: Redis's now), PER_CALL per call
    and shard, in chunks of CHUNK calls."""
    keys = [ShardKeys.of(s) for s in range(SHARDS)]
    by_shard: list[list[str]] = [[] for _ in range(SHARDS)]
    chunk: list[str] = []

    def call(shard: int) -> None:
        k = keys[shard]
        head = ["EVALSHA", sha, str(len(k.for_apply)), *k.for_apply, "0"]
        chunk.append(resp([*head, "1", wake_channel(shard), "60000", *by_shard[shard]]))
        by_shard[shard] = []

    for i in range(n):
        conversation = f"conv-{i:07d}"
        shard = shard_of(conversation, SHARDS)
        event = AgentMessage(conversation, f"agent-{i % 500}", f"msg-{i:07d}", 0)
        by_shard[shard].append(apply_arg(event, 30000))
        if len(by_shard[shard]) == PER_CALL:
            call(shard)
        if len(chunk) >= CHUNK:
            yield "".join(chunk).encode()
            chunk.clear()
    for shard in range(SHARDS):
        if by_shard[shard]:
            call(shard)
    yield "".join(chunk).encode()


def mass_insert(port: int, sha: str, n: int) -> str:
    cli = shutil.which("redis-cli")
    assert cli, "redis-cli is not installed (it comes with redis-server)"
    with subprocess.Popen(
        [cli, "-p", str(port), "--pipe"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            for data in track_commands(sha, n):
                proc.stdin.write(data)
            proc.stdin.close()
            out = proc.stdout.read().decode()
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    return out


def used_memory(client: sync_redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def test_memory_per_waiting_conversation(
    benchmark: Any, redis_server: RedisServer, redis_sync: sync_redis.Redis, report: Report
) -> None:
    script = Script.load("apply")
    redis_sync.script_load(script.source)
    before = used_memory(redis_sync)
    out = benchmark.pedantic(
        mass_insert, args=(redis_server.port, script.sha, CONVERSATIONS), rounds=1
    )
    found = re.search(r"errors: (\d+), replies: (\d+)", out)
    assert found, out
    assert int(found.group(1)) == 0, out
    after = used_memory(redis_sync)
    waiting = sum(int(redis_sync.zcard(ShardKeys.of(s).waiting)) for s in range(SHARDS))
    assert waiting == CONVERSATIONS
    by_key: dict[str, float] = {}
    for s in range(SHARDS):
        k = ShardKeys.of(s)
        for name, key in (("records hash", k.records), ("waiting sorted set", k.waiting)):
            usage = int(redis_sync.memory_usage(key, samples=0) or 0)
            by_key[name] = by_key.get(name, 0.0) + usage / CONVERSATIONS
    per = (after - before) / CONVERSATIONS
    detail = {
        "conversations": CONVERSATIONS,
        "used_memory_delta": after - before,
        "by_structure_bytes": {k: round(v, 1) for k, v in by_key.items()},
        "example_record": redis_sync.hget(
            ShardKeys.of(shard_of("conv-0000000", SHARDS)).records, "conv-0000000"
        ),
    }
    benchmark.extra_info.update(detail)
    report.add("memory_per_conversation", per, **detail)
