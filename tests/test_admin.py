"""The operator's /admin endpoints and the /console files, through aiohttp's test client on
the session's real redis-server: the same answers as the CLI, API_TOKEN and the read-only
CONSOLE_TOKEN, and bad input refused with nothing changed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.support.redis_server import RedisServer
from tracker.api.app import create_app
from tracker.api.console import ASSETS
from tracker.errors import ConfigError
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys, shard_of
from tracker.settings import Settings

Client = TestClient[web.Request, web.Application]

FULL = {"Authorization": "Bearer full-token"}
READ_ONLY = {"Authorization": "Bearer console-token"}
SINCE_MS = 1_764_000_000_000
SHARDS = 4


@pytest.fixture
def admin_settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return make_settings(
        redis_server.url,
        tmp_path / "run",
        SHARD_COUNT=str(SHARDS),
        API_TOKEN="full-token",
        CONSOLE_TOKEN="console-token",
    )


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, admin_settings: Settings, redis: Redis) -> Client:
    return await aiohttp_client(create_app(admin_settings, redis))


def dead_letter(client: sync_redis.Redis, conversation: str, **extra: str) -> str:
    shard = shard_of(conversation, SHARDS)
    k = ShardKeys.of(shard)
    fields: Any = {
        "reason": "permanent: webhook: HTTP 410",
        "attempts": "1",
        "source_id": "1-0",
        "c": conversation,
        "l": "1",
        "g": "1",
        "s": str(SINCE_MS),
        "d": str(SINCE_MS + 1000),
        "a": "agent-1",
        "m": "m-1",
        **extra,
    }
    return f"{shard}-{client.xadd(k.dead_letters, fields)!s}"


async def get(client: Client, path: str, headers: dict[str, str] = FULL) -> tuple[int, Any]:
    response = await client.get(path, headers=headers)
    return response.status, await response.json()


async def post(
    client: Client, path: str, body: Any, headers: dict[str, str] = FULL
) -> tuple[int, Any]:
    response = await client.post(path, json=body, headers=headers)
    return response.status, await response.json()


# --- the console's files -----------------------------------------------------------------


@pytest.mark.parametrize("path", list(ASSETS))
async def test_the_console_files_need_no_token_and_forbid_foreign_scripts(
    client: Client, path: str
) -> None:
    response = await client.get(path)
    assert response.status == 200
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    body = await response.text()
    assert body
    assert "http://" not in body  # nothing from elsewhere: it works offline
    assert "https://" not in body


async def test_the_page_loads_only_its_own_files(client: Client) -> None:
    page = await (await client.get("/console")).text()
    assert '<script src="console/console.js" defer></script>' in page
    assert "<script>" not in page  # no inline script: the policy would refuse it


async def test_the_script_never_writes_html() -> None:
    """Every value reaches the page as text: the script has no way to write markup."""
    from importlib import resources

    script = (resources.files("tracker.api.console") / "console.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


# --- tokens ------------------------------------------------------------------------------


async def test_admin_needs_a_token(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, body = await get(client, "/admin/status", headers)
        assert status == 401
        assert body["error"]["code"] == "unauthorized"


async def test_the_console_token_reads_admin_and_nothing_else(
    client: Client, redis_sync: sync_redis.Redis
) -> None:
    letter = dead_letter(redis_sync, "conv-a")
    for path in ("/admin/status", "/admin/pending", "/admin/dead-letters"):
        status, _ = await get(client, path, READ_ONLY)
        assert status == 200, path
    status, body = await post(client, "/admin/dead-letters/purge", {"ids": [letter]}, READ_ONLY)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, _ = await post(
        client, "/conversations/c1/agent-message", {"agent_id": "a", "message_id": "m"}, READ_ONLY
    )
    assert status == 403
    status, _ = await get(client, "/conversations/c1", READ_ONLY)
    assert status == 403
    assert redis_sync.xlen(ShardKeys.of(int(letter.split("-")[0])).dead_letters) == 1
    assert not redis_sync.exists(ShardKeys.of(shard_of("c1", SHARDS)).records)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONSOLE_TOKEN": "ro"}, "CONSOLE_TOKEN: needs API_TOKEN"),
        ({"CONSOLE_TOKEN": "same", "API_TOKEN": "same"}, "must differ from every API_TOKEN"),
    ],
)
def test_a_console_token_that_would_open_more_is_a_configuration_error(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


# --- what the endpoints answer -----------------------------------------------------------


async def test_status_is_the_cli_report(client: Client, redis_sync: sync_redis.Redis) -> None:
    redis_sync.set(ShardKeys.of(0).leader, "pod-a|1", px=10_000)
    dead_letter(redis_sync, "conv-a")
    status, body = await get(client, "/admin/status")
    assert status == 200
    assert body["healthy"] is False
    assert [s["leader"] for s in body["shards"]] == ["pod-a", None, None, None]
    assert body["totals"]["dead_letters"] == 1
    assert "shards without a leader: 1-3" in body["problems"]


async def test_pending_lists_entries_and_checks_its_parameters(
    client: Client, redis_sync: sync_redis.Redis
) -> None:
    k = ShardKeys.of(2)
    redis_sync.xgroup_create(k.outbox, CONSUMER_GROUP, id="0", mkstream=True)
    now = int(time.time() * 1000)
    entry = str(redis_sync.xadd(k.outbox, {"e": f"conv-p|1|1|{now - 1000}|{now}|a|m"}))
    redis_sync.xreadgroup(CONSUMER_GROUP, "pod-a-0", {k.outbox: ">"})
    status, body = await get(client, "/admin/pending?shard=2")
    assert status == 200
    assert [(p["id"], p["conversation_id"], p["consumer"]) for p in body["pending"]] == [
        (f"2-{entry}", "conv-p", "pod-a-0")
    ]
    for query in ("shard=4", "shard=-1", "limit=0", "limit=1001", "limit=x", "limit=\u00b2"):
        status, body = await get(client, f"/admin/pending?{query}")
        assert (status, body["error"]["code"]) == (422, "invalid_field"), query


async def test_dead_letters_listed_filtered_replayed_and_purged(
    client: Client, redis_sync: sync_redis.Redis
) -> None:
    first = dead_letter(redis_sync, "conv-a")
    second = dead_letter(redis_sync, "conv-b")
    status, body = await get(client, "/admin/dead-letters?limit=1")
    assert [d["id"] for d in body["dead_letters"]] == [second]
    assert body["total"] == 2
    _, body = await get(client, "/admin/dead-letters?conversation=conv-a")
    assert [d["notification"]["conversation_id"] for d in body["dead_letters"]] == ["conv-a"]
    _, body = await get(client, "/admin/dead-letters?since=2000-01-01T00:00:00Z")
    assert len(body["dead_letters"]) == 2
    for before_1970 in ("1969-12-31T00:00:00Z", "999999999d"):  # no stream id: all of them
        status, body = await get(client, f"/admin/dead-letters?since={before_1970}")
        assert (status, len(body["dead_letters"])) == (200, 2), before_1970

    status, body = await post(client, "/admin/dead-letters/replay", {"ids": [first]})
    assert (status, body) == (200, {"replayed": [first], "refused": {}, "gone": []})
    k = ShardKeys.of(int(first.split("-")[0]))
    assert redis_sync.xlen(k.outbox) == 1
    status, body = await post(client, "/admin/dead-letters/purge", {"ids": [second]})
    assert (status, body) == (200, {"purged": 1})
    assert await get(client, "/admin/dead-letters") == (
        200,
        {"total": 0, "dead_letters": []},
    )


async def test_replay_refuses_a_malformed_dead_letter(
    client: Client, redis_sync: sync_redis.Redis
) -> None:
    k = ShardKeys.of(1)
    entry = str(redis_sync.xadd(k.dead_letters, {"reason": "malformed: x", "e": "<b>x</b>"}))
    status, body = await post(client, "/admin/dead-letters/replay", {"ids": [f"1-{entry}"]})
    assert status == 200
    assert body["replayed"] == []
    assert body["refused"][f"1-{entry}"].startswith("malformed")
    assert redis_sync.xlen(k.dead_letters) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"ids": ["1-1700000000000-0"]}, 404, "not_found"),
        ({"ids": ["1700000000000-0"]}, 422, "invalid_id"),
        ({"ids": ["<script>"]}, 422, "invalid_id"),
        ({"ids": []}, 422, "invalid_field"),
        ({"ids": [7]}, 422, "invalid_field"),
        ({"ids": "1-1-0"}, 422, "invalid_field"),
        ([], 422, "invalid_field"),
    ],
)
@pytest.mark.parametrize("action", ["replay", "purge"])
async def test_a_bad_or_unknown_id_changes_nothing(
    client: Client,
    redis_sync: sync_redis.Redis,
    action: str,
    body: Any,
    status: int,
    code: str,
) -> None:
    known = dead_letter(redis_sync, "conv-a")
    if isinstance(body, dict) and isinstance(body["ids"], list) and body["ids"]:
        body = {"ids": [known, *body["ids"]]}  # one good id beside it: still nothing done
    got, answer = await post(client, f"/admin/dead-letters/{action}", body)
    assert (got, answer["error"]["code"]) == (status, code)
    assert redis_sync.xlen(ShardKeys.of(int(known.split("-")[0])).dead_letters) == 1


async def test_conversation_by_query_parameter(
    client: Client, redis_sync: sync_redis.Redis
) -> None:
    status, body = await post(
        client, "/conversations/a.b:c@d-e/agent-message", {"agent_id": "ag", "message_id": "m"}
    )
    assert status == 200, body
    status, report = await get(client, "/admin/conversation?id=a.b:c@d-e")
    assert status == 200
    assert report["conversation"]["conversation_id"] == "a.b:c@d-e"
    assert report["conversation"]["state"] == "waiting"
    for query, expected in (("id=..", 404), ("id=nobody", 404), ("id=%3Cb%3E", 422), ("", 422)):
        status, _ = await get(client, f"/admin/conversation?{query}")
        assert status == expected, query


async def test_a_conversations_entries_still_to_deliver(
    client: Client, redis_sync: sync_redis.Redis
) -> None:
    """Pending and unread shard stream entries and dead letters; not acknowledged ones."""
    status, _ = await post(
        client, "/conversations/conv-s/agent-message", {"agent_id": "ag", "message_id": "m"}
    )
    assert status == 200
    shard = shard_of("conv-s", SHARDS)
    k = ShardKeys.of(shard)
    redis_sync.xgroup_create(k.outbox, CONSUMER_GROUP, id="0", mkstream=True)
    now = int(time.time() * 1000)
    ids = [
        str(redis_sync.xadd(k.outbox, {"e": f"conv-s|1|1|{now}|{now + level}|ag|m"}))
        for level in (1, 2)
    ]
    redis_sync.xadd(k.outbox, {"e": f"other|1|1|{now}|{now}|ag|m"})
    redis_sync.xreadgroup(CONSUMER_GROUP, "pod-a-0", {k.outbox: ">"}, count=2)
    redis_sync.xack(k.outbox, CONSUMER_GROUP, ids[0])
    unread = str(redis_sync.xadd(k.outbox, {"e": f"conv-s|1|1|{now}|{now + 3}|ag|m"}))
    letter = dead_letter(redis_sync, "conv-s")
    status, report = await get(client, "/admin/conversation?id=conv-s")
    assert status == 200
    assert sorted((e["kind"], e["id"], e.get("consumer")) for e in report["in_streams"]) == [
        ("dead_letter", letter, None),
        ("pending", f"{shard}-{ids[1]}", "pod-a-0"),
        ("unread", f"{shard}-{unread}", None),
    ]
    assert [h["kind"] for h in report["history"]] == ["started"]
    assert [v["status"] for v in report["conversation"]["levels"]] == ["scheduled"] * 3
