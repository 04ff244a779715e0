"""The operator CLI against a real Redis, as an operator runs it (a subprocess): status,
pending, one conversation, dead letters, reshard; exit codes and one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as sync_redis

from tests.support.redis_server import RedisServer
from tracker.delivery.notification import Notification
from tracker.redis.keys import CONSUMER_GROUP, LAYOUT, ShardKeys, shard_of


def cli_env(redis_server: RedisServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "RUN_DIR": str(tmp_path / "run"),
        "SHARD_COUNT": "4",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **extra,
    }


def tracker(
    redis_server: RedisServer, tmp_path: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args],
        env=cli_env(redis_server, tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def dead_letter(redis_sync: sync_redis.Redis) -> tuple[ShardKeys, str]:
    """One conversation with a notification in the dead-letter stream of its shard."""
    k = ShardKeys.of(shard_of("conv-1", 4))
    redis_sync.hset(k.records, "conv-1", "W|1|1764000000000|1000|agent|m1|1764000000000|0||")
    redis_sync.xgroup_create(k.outbox, CONSUMER_GROUP, id="0", mkstream=True)
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
    return k, f"{k.shard}-{entry!s}"


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stderr


def test_status_exits_1_when_degraded_and_0_when_healthy(
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    tmp_path: Path,
    dead_letter: tuple[ShardKeys, str],
) -> None:
    done = tracker(redis_server, tmp_path, "status")
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[0].endswith("DEGRADED")
    assert "shards without a leader: 0-3" in done.stdout
    assert "1 dead letters waiting" in done.stdout
    for n in range(4):
        redis_sync.set(ShardKeys.of(n).leader, f"pod-a|{n}", px=60_000)
    redis_sync.delete(dead_letter[0].dead_letters)
    healthy = tracker(redis_server, tmp_path, "status", "--json")
    assert healthy.returncode == 0, healthy.stdout
    report = orjson.loads(healthy.stdout)
    assert report["healthy"] is True
    assert [s["leader"] for s in report["shards"]] == ["pod-a"] * 4


def test_status_watch_repeats_until_interrupted(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "tracker", "status", "--json", "--watch", "0.2"],
        env=cli_env(redis_server, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            reports = [orjson.loads(proc.stdout.readline()) for _ in range(3)]
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        errors = proc.stderr.read()
    assert len({r["at"] for r in reports}) == 3
    assert code == 1  # the last report's: no shard has a leader
    assert "Traceback" not in errors


def test_status_watch_keeps_watching_through_a_redis_outage(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    env = cli_env(redis_server, tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
    with subprocess.Popen(
        [sys.executable, "-m", "tracker", "status", "--json", "--watch", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            rounds = [orjson.loads(proc.stdout.readline()) for _ in range(2)]
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        errors = proc.stderr.read()
    assert all(r["error"].startswith("cannot reach Redis: ") for r in rounds), rounds
    assert code == 2
    assert "Traceback" not in errors


def test_conversation_shows_state_history_and_its_entries(
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    tmp_path: Path,
    dead_letter: tuple[ShardKeys, str],
) -> None:
    done = tracker(redis_server, tmp_path, "conversation", "conv-1", "--json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["conversation"]["state"] == "waiting"
    assert [v["status"] for v in report["conversation"]["levels"]] == [
        "dead_lettered",
        "scheduled",
        "scheduled",
    ]
    assert [h["kind"] for h in report["history"]] == ["started", "dead_lettered"]
    assert report["history"][1]["reason"] == "max_deliveries: HTTP 500"
    assert [(e["kind"], e["id"]) for e in report["in_streams"]] == [("dead_letter", dead_letter[1])]
    text = tracker(redis_server, tmp_path, "conversation", "conv-1").stdout.splitlines()
    assert text[0].startswith("conv-1 (shard 0): waiting, generation 1, waiting since ")
    assert text[1].split() == [
        *("level", "status", "due_at", "delivered_at", "sinks", "attempts", "last_error")
    ]
    assert text[2].split()[:2] == ["1", "dead_lettered"]
    assert text[2].endswith("max_deliveries: HTTP 500")
    assert text[5] == "history (oldest first):"
    assert [line.split()[1] for line in text[7:9]] == ["started", "dead_lettered"]
    assert text[9] == "in its streams now:"
    assert text[11].split()[:2] == ["dead_letter", dead_letter[1]]
    unknown = tracker(redis_server, tmp_path, "conversation", "nobody")
    assert (unknown.returncode, unknown.stderr) == (1, "tracker: no such conversation: nobody\n")


def test_dead_letters_list_replay_and_purge(
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    tmp_path: Path,
    dead_letter: tuple[ShardKeys, str],
) -> None:
    k, letter = dead_letter
    listed = tracker(redis_server, tmp_path, "dead-letters", "list", "--json")
    (shown,) = orjson.loads(listed.stdout)["dead_letters"]
    assert shown["id"] == letter
    assert shown["notification"]["conversation_id"] == "conv-1"
    assert (shown["reason"], shown["last_error"]) == ("max_deliveries", "HTTP 500")
    text = tracker(redis_server, tmp_path, "dead-letters", "list")
    assert text.stdout.splitlines()[0].startswith(f"{letter}  dead-lettered ")
    assert '"conversation_id":"conv-1"' in text.stdout
    replayed = tracker(redis_server, tmp_path, "dead-letters", "replay", letter)
    assert (replayed.returncode, replayed.stdout) == (0, "replayed 1\n")
    assert redis_sync.xlen(k.dead_letters) == 0
    entries: Any = redis_sync.xrange(k.outbox)
    ((entry_id, fields),) = entries
    n = Notification.from_entry(k.shard, entry_id, fields)
    assert (n.conversation_id, n.level, n.generation) == ("conv-1", 1, 1)
    again = tracker(redis_server, tmp_path, "dead-letters", "replay", letter)
    assert again.returncode == 1
    assert again.stderr == f"tracker: no such dead letter: {letter} (nothing done)\n"
    redis_sync.xadd(k.dead_letters, {"c": "x"})
    refused = tracker(redis_server, tmp_path, "dead-letters", "purge", "--all")
    assert refused.returncode == 2
    assert redis_sync.xlen(k.dead_letters) == 1
    purged = tracker(redis_server, tmp_path, "dead-letters", "purge", "--all", "--yes")
    assert (purged.returncode, purged.stdout) == (0, "purged 1\n")
    assert redis_sync.xlen(k.dead_letters) == 0


def test_replay_of_a_malformed_dead_letter_is_refused(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    k = ShardKeys.of(2)
    entry = str(redis_sync.xadd(k.dead_letters, {"reason": "malformed: bad", "e": "x|y"}))
    done = tracker(redis_server, tmp_path, "dead-letters", "replay", "--all")
    assert done.returncode == 1
    assert done.stdout == "replayed 0\n"
    assert f"tracker: refused 2-{entry}: malformed" in done.stderr
    assert redis_sync.xlen(k.dead_letters) == 1


def test_a_dead_letter_that_is_not_utf8_is_listed_byte_for_byte(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    """An unreadable entry is dead-lettered with its fields as they were, bytes too."""
    with sync_redis.Redis(port=redis_server.port) as raw:  # bytes, not text
        raw.xadd(ShardKeys.of(1).dead_letters, {b"reason": b"malformed: x", b"e": b"\xff<b>"})
    listed = tracker(redis_server, tmp_path, "dead-letters", "list", "--json")
    no_traceback(listed)
    (shown,) = orjson.loads(listed.stdout)["dead_letters"]
    assert shown["fields"]["e"] == "\\xff<b>"
    text = tracker(redis_server, tmp_path, "dead-letters", "list")
    assert text.returncode == 0, text.stderr
    assert "\\\\xff<b>" in text.stdout  # JSON's escape of the backslash


def test_pending_lists_entries_with_owner_and_last_error(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    k = ShardKeys.of(3)
    redis_sync.xgroup_create(k.outbox, CONSUMER_GROUP, id="0", mkstream=True)
    entry = str(redis_sync.xadd(k.outbox, {"e": "conv-9|2|1|1764000000000|1764000002000|a|m"}))
    redis_sync.xreadgroup(CONSUMER_GROUP, "pod-a-1", {k.outbox: ">"})
    redis_sync.hset(
        k.attempts, mapping={entry: 2, f"{entry}:last": "1764000003000|webhook|HTTP 502"}
    )
    done = tracker(redis_server, tmp_path, "pending", "--shard", "3")
    assert done.returncode == 0, done.stderr
    header, row, summary = done.stdout.splitlines()
    assert header.split() == [
        *("id", "state", "conversation", "level", "due_at", "owner", "idle"),
        *("read", "attempts", "last_error"),
    ]
    assert row.split()[:6] == [
        f"3-{entry}",
        "failing",
        "conv-9",
        "2",
        "2025-11-24T16:00:02.000Z",
        "pod-a-1",
    ]
    assert row.endswith("1         2  HTTP 502")
    assert summary == "1 of 1 pending entries (oldest first)"
    as_json = orjson.loads(tracker(redis_server, tmp_path, "pending", "--json").stdout)
    assert as_json["pending"][0]["last_error"] == "HTTP 502"


# --- 13.11: no traceback for an expected condition ---------------------------------------

UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.mark.parametrize(
    ("env", "args", "code", "message"),
    [
        (
            {"REDIS_URL": UNREACHABLE},
            ["status"],
            2,
            "tracker: cannot reach Redis at redis://127.0.0.1:1/0: ",
        ),
        (
            {"REDIS_URL": "redis://u:s3cret@127.0.0.1:1/0"},
            ["pending"],
            2,
            "tracker: cannot reach Redis at redis://u:***@127.0.0.1:1/0: ",
        ),
        ({"REDIS_URL": UNREACHABLE}, ["dead-letters", "list"], 2, "tracker: cannot reach Redis"),
        ({"REDIS_URL": UNREACHABLE}, ["conversation", "c1"], 2, "tracker: cannot reach Redis"),
        (
            {},
            ["dead-letters", "list", "--limit", "0"],
            2,
            "argument --limit: expected 1..100000, got 0",
        ),
        (
            {},
            ["dead-letters", "list", "--limit", "-5"],
            2,
            "argument --limit: expected 1..100000, got -5",
        ),
        (
            {},
            ["dead-letters", "list", "--limit", "many"],
            2,
            "argument --limit: expected a whole number",
        ),
        (
            {},
            ["dead-letters", "list", "--since", "yesterday"],
            2,
            "argument --since: expected an RFC 3339",
        ),
        (
            {},
            ["dead-letters", "purge", "not-an-id"],
            2,
            "tracker: not a dead-letter id: 'not-an-id'",
        ),
        ({}, ["dead-letters", "purge", "1700000000000-0"], 2, "tracker: not a dead-letter id"),
        ({}, ["dead-letters", "purge"], 2, "tracker: purge: name dead-letter ids, or --all"),
        (
            {},
            ["dead-letters", "replay", "--all", "1-1-1"],
            2,
            "tracker: replay: give ids or --all, not both",
        ),
        (
            {},
            ["dead-letters", "purge", "1-1700000000000-0"],
            1,
            "tracker: no such dead letter: 1-1700000000000-0",
        ),
        (
            {},
            ["dead-letters", "replay", "evt_" + "0" * 32],
            1,
            "tracker: no such dead letter: evt_",
        ),
        ({}, ["pending", "--shard", "4"], 2, "tracker: no shard 4: the layout has shards 0..3"),
        ({}, ["conversation", "<b>"], 2, "argument id: conversation id must match"),
        (
            {"REDIS_URL": "redis://127.0.0.1:99999/0"},
            ["status"],
            2,
            "tracker: configuration error: REDIS_URL: port '99999'",
        ),
        (
            {"REDIS_URL": "redis://127.0.0.1:6379/zero"},
            ["status"],
            2,
            "tracker: configuration error: REDIS_URL: database 'zero' is not a number",
        ),
        (
            {"REDIS_URL": "redis://127.0.0.1:6379/0?db=x"},
            ["status"],
            2,
            "tracker: configuration error: REDIS_URL: database 'x'",
        ),
    ],
)
def test_an_expected_failure_is_one_line_and_an_exit_code(
    redis_server: RedisServer,
    redis_sync: sync_redis.Redis,
    tmp_path: Path,
    env: dict[str, str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    done = tracker(redis_server, tmp_path, *args, **env)
    no_traceback(done)
    assert done.returncode == code, done.stderr
    assert message in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_output_closed_early_stops_quietly(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    """`tracker dead-letters list | head -1`: the reader goes away mid-output."""
    k = ShardKeys.of(0)
    for i in range(3000):
        redis_sync.xadd(k.dead_letters, {"reason": "permanent: HTTP 410", "c": f"conv-{i}"})
    done = subprocess.run(
        f"{sys.executable} -m tracker dead-letters list --limit 3000 | head -1; "
        'echo "status ${PIPESTATUS[0]}" >&2',
        shell=True,
        executable="/bin/bash",
        env=cli_env(redis_server, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert len(done.stdout.splitlines()) == 1
    assert done.stderr == "status 141\n"


def test_help_documents_the_exit_codes() -> None:
    for args in (["--help"], ["status", "--help"], ["dead-letters", "--help"]):
        done = subprocess.run(
            [sys.executable, "-m", "tracker", *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0
        for line in (
            "exit codes:",
            "  0    done; status: healthy",
            "  1    done, but",
            "  2    could not run",
        ):
            assert line in done.stdout, (args, done.stdout)


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


def test_a_long_replay_shows_its_progress(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tracker.ops import cli

    monkeypatch.setattr(cli, "PROGRESS_EVERY_S", 0.0)
    progress = cli.ProgressLine("replay")
    progress(500, 2000)
    progress(1000, 2000)
    progress(2000, 2000)  # done: the summary line says it
    progress.finish()
    assert capsys.readouterr().err == "replay: 500/2000\nreplay: 1000/2000\n"
