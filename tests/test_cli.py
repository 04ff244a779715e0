"""The operator CLI against a real Redis: status, one conversation, dead letters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis

from tests.redis_server import RedisServer
from tracker.events import Notification
from tracker.keys import CONSUMER_GROUP, LAYOUT, ShardKeys, shard_of


def tracker(
    redis_server: RedisServer, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "RUN_DIR": str(tmp_path / "run"),
        "SHARD_COUNT": "4",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def dead_letter(redis_sync: sync_redis.Redis) -> tuple[ShardKeys, str]:
    """One conversation with a notification in the dead-letter stream of its shard."""
    k = ShardKeys.of(shard_of("conv-1", 4))
    redis_sync.hset(k.records, "conv-1", "W|1|1764000000000|1000|agent|m1|1764000000000|0||")
    redis_sync.xgroup_create(k.events, CONSUMER_GROUP, id="0", mkstream=True)
    fields: dict[Any, Any] = {
        "c": "conv-1",
        "l": "1",
        "g": "1",
        "s": "1764000000000",
        "d": "1764000001000",
        "a": "agent",
        "m": "m1",
    }
    entry = redis_sync.xadd(
        k.dead_letters,
        {"reason": "max_deliveries: HTTP 500", "attempts": "5", "source_id": "1-0", **fields},
    )
    # as tracker/lua/dead_letter.lua notes it in the conversation's history
    redis_sync.hset(k.history, "conv-1", "X|1764000002000|1|1|max_deliveries: HTTP 500")
    return k, str(entry)


def test_status_lists_every_shard(
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    tmp_path: Path,
    dead_letter: tuple[ShardKeys, str],
) -> None:
    done = tracker(redis_server, tmp_path, "status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["shards: 4 (layout epoch 0)", "pods alive: none"]
    assert len([line for line in lines if line.strip().split(" ")[0].isdigit()]) == 4
    assert "shards without a leader: [0, 1, 2, 3]" in done.stdout


def test_conversation_shows_state_and_history(
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    tmp_path: Path,
    dead_letter: tuple[ShardKeys, str],
) -> None:
    done = tracker(redis_server, tmp_path, "conversation", "conv-1")
    assert done.returncode == 0, done.stderr
    assert '"state": "waiting"' in done.stdout
    shown = json.loads(done.stdout)
    assert [v["status"] for v in shown["conversation"]["levels"]] == [
        "dead_lettered",
        "scheduled",
        "scheduled",
    ]
    assert [h["kind"] for h in shown["history"]] == ["started", "dead_lettered"]
    assert shown["history"][1]["reason"] == "max_deliveries: HTTP 500"
    unknown = tracker(redis_server, tmp_path, "conversation", "nobody")
    assert unknown.returncode == 1


def test_dead_letters_list_replay_and_purge(
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    tmp_path: Path,
    dead_letter: tuple[ShardKeys, str],
) -> None:
    k, entry = dead_letter
    listed = tracker(redis_server, tmp_path, "dead-letters", "list")
    assert entry in listed.stdout
    assert "max_deliveries" in listed.stdout
    replayed = tracker(redis_server, tmp_path, "dead-letters", "replay", entry)
    assert replayed.stdout.strip() == "replayed 1"
    assert redis_sync.xlen(k.dead_letters) == 0
    entries: Any = redis_sync.xrange(k.events)
    ((entry_id, fields),) = entries
    n = Notification.from_entry(k.shard, entry_id, fields)
    assert (n.conversation_id, n.level, n.generation) == ("conv-1", 1, 1)
    redis_sync.xadd(k.dead_letters, {"c": "x"})
    purged = tracker(redis_server, tmp_path, "dead-letters", "purge")
    assert purged.stdout.strip() == "purged 1"
    assert redis_sync.xlen(k.dead_letters) == 0


@pytest.mark.parametrize("to", ["0", "many", "16385"])
def test_reshard_refuses_a_bad_count_and_changes_nothing(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path, to: str
) -> None:
    done = tracker(redis_server, tmp_path, "reshard", "--to", to)
    assert done.returncode == 2
    assert "argument --to: expected" in done.stderr
    assert redis_sync.keys("*") == []


def test_reshard_to_the_current_count_changes_nothing(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    done = tracker(redis_server, tmp_path, "reshard", "--to", "4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reshard: the layout already has 4 shards"
    assert redis_sync.hgetall(LAYOUT) == {"count": "4"}
