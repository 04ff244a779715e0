"""Redis memory per waiting conversation: 1,000,000 agent messages through the apply script
(50 a call), mass-inserted with `redis-cli --pipe`; INFO memory used_memory before and after."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis as sync_redis

from bench.harness import settings_for
from bench.report import Report
from tests.support.redis_server import RedisServer
from tracker.model import AgentMessage, Event
from tracker.redis.keys import ShardKeys, shard_of
from tracker.settings import Settings
from tracker.state.store import APPLY, apply_call

CONVERSATIONS = 1_000_000
SHARDS = 16
CHUNK = 1000  # script calls per write to redis-cli
PER_CALL = 50  # conversations per script call


def resp(parts: list[str]) -> str:
    """One command in the Redis protocol (every part here is ASCII)."""
    return f"*{len(parts)}\r\n" + "".join(f"${len(p)}\r\n{p}\r\n" for p in parts)


def track_commands(settings: Settings, n: int) -> Iterator[bytes]:
    """EVALSHA apply for n new conversations (timestamp 0: Redis's now), PER_CALL per call
    and shard, in chunks of CHUNK calls."""
    by_shard: list[list[Event]] = [[] for _ in range(SHARDS)]
    chunk: list[str] = []

    def call(shard: int) -> None:
        command = apply_call(shard, 0, by_shard[shard], settings).command()
        chunk.append(resp([str(part) for part in command]))
        by_shard[shard] = []

    for i in range(n):
        conversation = f"conv-{i:07d}"
        shard = shard_of(conversation, SHARDS)
        by_shard[shard].append(AgentMessage(conversation, f"agent-{i % 500}", f"msg-{i:07d}", 0))
        if len(by_shard[shard]) == PER_CALL:
            call(shard)
        if len(chunk) >= CHUNK:
            yield "".join(chunk).encode()
            chunk.clear()
    for shard in range(SHARDS):
        if by_shard[shard]:
            call(shard)
    yield "".join(chunk).encode()


def mass_insert(port: int, settings: Settings, n: int) -> str:
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
            for data in track_commands(settings, n):
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
    benchmark: Any,
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    report: Report,
    tmp_path: Path,
) -> None:
    redis_sync.script_load(APPLY.source)
    settings = settings_for(redis_server.url, tmp_path, TIMEOUT_INTERVAL_MS="30000")
    before = used_memory(redis_sync)
    out = benchmark.pedantic(
        mass_insert, args=(redis_server.port, settings, CONVERSATIONS), rounds=1
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
