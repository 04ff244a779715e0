"""Every HTTP endpoint through aiohttp's test client, on the session's real redis-server."""

from __future__ import annotations

import io
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.support.redis_server import RedisServer, free_port
from tracker.api.app import create_app
from tracker.api.edge import MAX_BODY
from tracker.api.validation import MAX_BATCH
from tracker.delivery.notification import event_id
from tracker.redis.keys import LAYOUT
from tracker.settings import Settings
from tracker.timefmt import format_ms
from tracker.timing import progress

Client = TestClient[web.Request, web.Application]
Json = dict[str, Any]

TOKENS = ("token-a", "token-b")
AUTH = {"Authorization": f"Bearer {TOKENS[0]}"}
AGENT = "/conversations/c1/agent-message"
CUSTOMER = "/conversations/c1/customer-response"
DAY_MS = 86_400_000


# --- helpers -------------------------------------------------------------------------------


async def data_keys(redis: Redis) -> list[str]:
    """Every key but the shard layout (any process records it on first use)."""
    return [str(k) for k in await redis.keys("*") if k != LAYOUT]


def now_ms() -> int:
    return int(time.time() * 1000)


def ago(ms: int) -> str:
    return format_ms(now_ms() - ms)


def agent_body(message_id: str = "m1", ts: int | None = None, **extra: Any) -> Json:
    body: Json = {"agent_id": "agent-1", "message_id": message_id, **extra}
    if ts is not None:
        body["timestamp"] = format_ms(ts)
    return body


def customer_body(message_id: str = "r1", ts: int | None = None) -> Json:
    body: Json = {"customer_id": "customer-1", "message_id": message_id}
    if ts is not None:
        body["timestamp"] = format_ms(ts)
    return body


async def post(
    client: Client, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    response = await client.post(path, json=body, headers=headers)
    return response.status, await response.json()


async def get(client: Client, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = await client.get(path, headers=headers)
    return response.status, await response.json()


def assert_error(body: Any, code: str | None = None) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


async def app_client(aiohttp_client: AiohttpClient, settings: Settings, redis: Redis) -> Client:
    return await aiohttp_client(create_app(settings, redis))


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, settings: Settings, redis: Redis) -> Client:
    return await app_client(aiohttp_client, settings, redis)


@pytest.fixture
def auth_settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return make_settings(
        redis_server.url, tmp_path / "run", TIMEOUT_INTERVAL_MS="1000", API_TOKEN=" , ".join(TOKENS)
    )


@pytest.fixture
async def auth_client(
    aiohttp_client: AiohttpClient, auth_settings: Settings, redis: Redis
) -> Client:
    return await app_client(aiohttp_client, auth_settings, redis)


# --- agent message and customer response ---------------------------------------------------


async def test_agent_message_starts_the_clock(client: Client) -> None:
    ts = now_ms() - 200
    status, body = await post(client, AGENT, agent_body("m1", ts))
    assert status == 200
    assert body == {
        "conversation_id": "c1",
        "status": "started",
        "generation": 1,
        "waiting_since": format_ms(ts),
        "next_due_at": format_ms(ts + 1000),
    }


async def test_agent_message_replay_restart_and_out_of_order(client: Client) -> None:
    ts = now_ms() - 5000
    await post(client, AGENT, agent_body("m1", ts))
    _, replay = await post(client, AGENT, agent_body("m1", ts + 100))
    assert (replay["status"], replay["generation"]) == ("duplicate", 1)
    assert replay["waiting_since"] == format_ms(ts)

    _, restart = await post(client, AGENT, agent_body("m2", ts + 2000))
    assert (restart["status"], restart["generation"]) == ("restarted", 2)
    assert restart["next_due_at"] == format_ms(ts + 3000)

    _, stale = await post(client, AGENT, agent_body("m0", ts + 1000))
    assert (stale["status"], stale["generation"]) == ("stale", 2)
    assert stale["waiting_since"] == format_ms(ts + 2000)


async def test_agent_message_without_timestamp_uses_now(client: Client, redis: Redis) -> None:
    seconds, micros = await redis.time()
    before = seconds * 1000 + micros // 1000
    _, body = await post(client, AGENT, agent_body("m1"))
    seconds, micros = await redis.time()
    after = seconds * 1000 + micros // 1000
    assert format_ms(before) <= body["waiting_since"] <= format_ms(after)


async def test_customer_response_answers_with_the_response_time(client: Client) -> None:
    ts = now_ms() - 10_000
    await post(client, AGENT, agent_body("m1", ts))
    status, body = await post(client, CUSTOMER, customer_body("r1", ts + 2500))
    assert status == 200
    assert body == {
        "conversation_id": "c1",
        "status": "answered",
        "generation": 1,
        "response_time_ms": 2500,
    }
    _, replay = await post(client, CUSTOMER, customer_body("r1", ts + 9000))
    assert (replay["status"], replay["response_time_ms"]) == ("duplicate", 2500)


async def test_customer_response_without_a_conversation_is_not_waiting(
    client: Client, redis: Redis
) -> None:
    status, body = await post(client, "/conversations/nobody/customer-response", customer_body())
    assert status == 200
    assert (body["status"], body["response_time_ms"]) == ("not_waiting", None)
    assert await data_keys(redis) == []


async def test_customer_response_older_than_the_agent_message_is_stale(client: Client) -> None:
    ts = now_ms() - 1000
    await post(client, AGENT, agent_body("m1", ts))
    _, body = await post(client, CUSTOMER, customer_body("r1", ts - 1))
    assert (body["status"], body["response_time_ms"]) == ("stale", None)
    _, view = await get(client, "/conversations/c1")
    assert view["state"] == "waiting"


# --- GET conversation ----------------------------------------------------------------------


async def test_get_conversation_shows_its_state(client: Client) -> None:
    ts = now_ms() - 300
    await post(client, AGENT, agent_body("m1", ts))
    status, body = await get(client, "/conversations/c1")
    assert status == 200
    assert body == {
        "conversation_id": "c1",
        "state": "waiting",
        "generation": 1,
        "agent_id": "agent-1",
        "message_id": "m1",
        "waiting_since": format_ms(ts),
        "timeout_ms": 1000,
        "level_fired": 0,
        "level_delivered": 0,
        "next_due_at": format_ms(ts + 1000),
        "response_time_ms": None,
        "levels": [
            {
                "level": level,
                "due_at": format_ms(ts + 1000 * level),
                "status": "scheduled",
                "event_id": event_id("c1", ts, level),
                "delivered_at": None,
                "sinks": None,
                "attempts": 0,
                "last_error": None,
            }
            for level in (1, 2, 3)
        ],
    }

    await post(client, CUSTOMER, customer_body("r1", ts + 250))
    _, answered = await get(client, "/conversations/c1")
    assert answered["state"] == "answered"
    assert answered["response_time_ms"] == 250
    assert answered["next_due_at"] is None
    assert [v["status"] for v in answered["levels"]] == ["cancelled"] * 3
    status, history = await get(client, "/conversations/c1/history")
    assert status == 200
    assert history == {
        "conversation_id": "c1",
        "history": [
            {
                "at": format_ms(ts),
                "kind": "started",
                "generation": 1,
                "agent_id": "agent-1",
                "message_id": "m1",
                "timeout_ms": 1000,
            },
            {
                "at": format_ms(ts + 250),
                "kind": "answered",
                "generation": 1,
                "response_time_ms": 250,
                "message_id": "r1",
            },
        ],
    }
    status, missing = await get(client, "/conversations/nobody/history")
    assert (status, missing["error"]["code"]) == (404, "not_found")


async def test_get_unknown_conversation_is_404(client: Client) -> None:
    status, body = await get(client, "/conversations/nobody")
    assert status == 404
    assert_error(body, "not_found")


# --- per-conversation timeout --------------------------------------------------------------


@pytest.mark.parametrize("timeout_ms", [100, 5000, 7 * DAY_MS])
async def test_timeout_ms_overrides_the_interval(client: Client, timeout_ms: int) -> None:
    ts = now_ms()
    status, body = await post(client, AGENT, agent_body("m1", ts, timeout_ms=timeout_ms))
    assert status == 200
    assert body["next_due_at"] == format_ms(ts + timeout_ms)
    _, view = await get(client, "/conversations/c1")
    assert view["timeout_ms"] == timeout_ms


async def test_timeout_ms_absent_or_null_uses_the_default(client: Client) -> None:
    ts = now_ms()
    _, body = await post(client, AGENT, agent_body("m1", ts, timeout_ms=None))
    assert body["next_due_at"] == format_ms(ts + 1000)


# --- bulk ingest ---------------------------------------------------------------------------


async def test_events_answers_each_item_in_order(client: Client) -> None:
    ts = now_ms() - 5000
    items: list[Any] = [
        {"type": "agent_message", "conversation_id": "c1", **agent_body("m1", ts)},
        {"type": "customer_response", "conversation_id": "c1", **customer_body("r1", ts + 700)},
        {"type": "agent_message", "conversation_id": "c-bad", "message_id": "m1"},
        {"type": "agent_message", "conversation_id": "c2", **agent_body("m1", ts)},
        {"type": "note", "conversation_id": "c3", **agent_body("m1", ts)},
        ["not", "an", "object"],
        {"type": "agent_message", "conversation_id": "c1", **agent_body("m1", ts)},
        {"type": "agent_message", "conversation_id": "c4", **agent_body("m1", timeout_ms=5)},
        {"type": "customer_response", **customer_body("r1")},
    ]
    status, body = await post(client, "/events", items)
    assert status == 200
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    ok = [r["index"] for r in results if r["status"] == "ok"]
    errors = [r["index"] for r in results if r["status"] == "error"]
    assert (ok, errors) == ([0, 1, 3, 6], [2, 4, 5, 7, 8])
    assert results[0]["result"]["status"] == "started"
    assert results[1]["result"] == {
        "conversation_id": "c1",
        "status": "answered",
        "generation": 1,
        "response_time_ms": 700,
    }
    assert results[3]["result"]["conversation_id"] == "c2"
    assert results[6]["result"]["status"] == "duplicate"
    for index in errors:
        assert_error({"error": results[index]["error"]})
        assert "result" not in results[index]
    assert results[7]["error"]["code"] == "invalid_field"

    for cid, expected in (("c1", 200), ("c2", 200), ("c-bad", 404), ("c3", 404), ("c4", 404)):
        assert (await get(client, f"/conversations/{cid}"))[0] == expected


async def test_events_empty_batch(client: Client, redis: Redis) -> None:
    assert await post(client, "/events", []) == (200, {"results": []})
    assert await data_keys(redis) == []


# --- health, readiness, metrics, OpenAPI ---------------------------------------------------


async def test_health(client: Client) -> None:
    assert await get(client, "/health") == (200, {"status": "ok"})


async def test_the_routes_answer_head_and_name_their_methods_on_405(client: Client) -> None:
    """Every GET route answers HEAD too; a path known under another method answers 405
    naming the methods it takes (the catch-all route works them out)."""
    async with client.head("/health") as resp:
        assert resp.status == 200
    async with client.get("/conversations/c1/agent-message") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert_error(await resp.json(), "method_not_allowed")
    async with client.delete("/conversations/c1") as resp:
        assert resp.status == 405
        assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}


async def test_ready_when_redis_is_reachable(client: Client) -> None:
    """The API alone (no supervisord, no role has reported in RUN_DIR)."""
    assert await get(client, "/ready") == (200, {"status": "ready", "redis": "ok", "roles": {}})


async def test_ready_fails_when_a_led_shard_is_not_swept(
    client: Client, settings: Settings
) -> None:
    settings.run_dir.mkdir(parents=True)
    progress.write(settings, {2: now_ms() - 60_000, 5: now_ms()})
    status, body = await get(client, "/ready")
    assert status == 503
    assert body["error"] == {"code": "not_sweeping", "message": "shards not swept recently: 2"}


def sample(exposition: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name + '{' + labels + '}')} (\S+)$", exposition, re.M)
    return float(match.group(1)) if match else 0.0


async def test_metrics_exposes_http_requests(client: Client) -> None:
    labels = 'method="POST",route="/conversations/{id}/agent-message",status="200"'

    async def scrape() -> str:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return await response.text()

    before = sample(await scrape(), "http_requests_total", labels)
    await post(client, AGENT, agent_body("m1"))
    text = await scrape()
    assert sample(text, "http_requests_total", labels) == before + 1
    assert "# TYPE customer_response_time_seconds histogram" in text
    assert "# TYPE http_request_duration_seconds histogram" in text


async def test_openapi_is_a_valid_document_of_every_route(client: Client) -> None:
    status, doc = await get(client, "/openapi.json")
    assert status == 200
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in client.app.router.routes()
        if r.resource is not None and r.method not in ("HEAD", "*")  # "*": the catch-all
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented


async def test_openapi_declares_bearer_auth_when_tokens_are_set(auth_client: Client) -> None:
    status, doc = await get(auth_client, "/openapi.json")
    assert status == 200
    validate(doc)
    assert doc["security"] == [{"bearer": []}]


# --- auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", TOKENS)
async def test_auth_accepts_each_configured_token(auth_client: Client, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    status, _ = await post(auth_client, AGENT, agent_body("m1"), headers)
    assert status == 200
    assert (await get(auth_client, "/conversations/c1", headers))[0] == 200


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer wrong", f"Basic {TOKENS[0]}", f"Bearer {TOKENS[0]}x", TOKENS[0]],
)
async def test_auth_rejects_missing_or_wrong_tokens(
    auth_client: Client, redis: Redis, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else None
    for path in (AGENT, "/events"):
        response = await auth_client.post(path, json=agent_body("m1"), headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(await response.json(), "unauthorized")
    assert (await get(auth_client, "/conversations/c1", headers))[0] == 401
    assert await data_keys(redis) == []


@pytest.mark.parametrize("path", ["/health", "/metrics"])
async def test_auth_leaves_health_and_metrics_open(auth_client: Client, path: str) -> None:
    assert (await auth_client.get(path)).status == 200


# --- bad requests --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One bad request: what is sent, and the 4xx it must get."""

    name: str
    status: int
    path: str = AGENT
    body: Callable[[], Any] = field(default=lambda: agent_body("m1"))
    raw: bytes | None = None
    method: str = "POST"
    content_type: str | None = "application/json"
    token: str | None = TOKENS[1]

    def data(self) -> io.BytesIO:
        return io.BytesIO(self.raw if self.raw is not None else orjson.dumps(self.body()))


MISSING = object()


def agent_with(**fields: Any) -> Callable[[], Any]:
    def body() -> Json:
        out = agent_body("m1", now_ms())
        out.update(fields)
        return {k: v for k, v in out.items() if v is not MISSING}

    return body


def customer_with(**fields: Any) -> Callable[[], Any]:
    def body() -> Json:
        out = customer_body("r1", now_ms())
        out.update(fields)
        return {k: v for k, v in out.items() if v is not MISSING}

    return body


ITEM = {"type": "agent_message", "conversation_id": "c1", "agent_id": "a", "message_id": "m"}

BAD_REQUESTS = [
    Bad("bad JSON", 400, raw=b'{"agent_id": "a1",'),
    Bad("trailing garbage after JSON", 400, raw=b'{"agent_id": "a1"} x'),
    Bad("empty body", 400, raw=b""),
    Bad("JSON array, not an object", 400, body=lambda: [agent_body("m1")]),
    Bad("JSON string, not an object", 400, body=lambda: "hello"),
    Bad("JSON null", 400, body=lambda: None),
    Bad("agent_id is a number", 422, body=agent_with(agent_id=42)),
    Bad("agent_id is null", 422, body=agent_with(agent_id=None)),
    Bad("message_id is a list", 422, body=agent_with(message_id=["m1"])),
    Bad("message_id is an object", 422, body=agent_with(message_id={"id": "m1"})),
    Bad("timestamp is epoch ms", 422, body=agent_with(timestamp=now_ms())),
    Bad("timestamp is a boolean", 422, body=agent_with(timestamp=True)),
    Bad("customer_id is a number", 422, path=CUSTOMER, body=customer_with(customer_id=7)),
    Bad("missing agent_id", 422, body=agent_with(agent_id=MISSING)),
    Bad("missing message_id", 422, body=agent_with(message_id=MISSING)),
    Bad("missing customer_id", 422, path=CUSTOMER, body=customer_with(customer_id=MISSING)),
    Bad("empty object", 422, body=lambda: {}),
    Bad("naive timestamp", 422, body=agent_with(timestamp=ago(0)[:-1])),
    Bad("timestamp with a date only", 422, body=agent_with(timestamp=ago(0)[:10])),
    Bad("malformed timestamp", 422, body=agent_with(timestamp="yesterday at noon")),
    Bad("impossible date", 422, body=agent_with(timestamp="2025-02-30T00:00:00Z")),
    Bad(
        "impossible hour",
        422,
        path=CUSTOMER,
        body=customer_with(timestamp=ago(0)[:11] + "25:00:00Z"),
    ),
    Bad("ISO week date", 422, body=agent_with(timestamp="2025-W01-1T00:00:00Z")),
    Bad("offset without colon", 422, body=agent_with(timestamp=ago(0)[:-1] + "+0000")),
    Bad("timestamp an hour ahead", 422, body=agent_with(timestamp=ago(-3_600_000))),
    Bad("timestamp 366 days old", 422, body=agent_with(timestamp=ago(366 * DAY_MS))),
    Bad("body over 1 MiB", 413, body=agent_with(pad="x" * MAX_BODY)),
    Bad("conversation id with braces", 422, path="/conversations/%7Bc1%7D/agent-message"),
    Bad("conversation id with a newline", 422, path="/conversations/c1%0A/agent-message"),
    Bad("conversation id with a pipe", 422, path="/conversations/c%7C1/agent-message"),
    Bad("conversation id with a space", 422, path="/conversations/c%201/agent-message"),
    Bad("conversation id of 129 chars", 422, path=f"/conversations/{'c' * 129}/agent-message"),
    Bad("conversation id not ASCII", 422, path="/conversations/caf%C3%A9/agent-message"),
    Bad("GET with a bad conversation id", 422, path="/conversations/%7Bc1%7D", method="GET"),
    Bad("agent_id empty", 422, body=agent_with(agent_id="")),
    Bad("agent_id with a pipe", 422, body=agent_with(agent_id="a|b")),
    Bad("agent_id with a space", 422, body=agent_with(agent_id="a b")),
    Bad("agent_id with a trailing newline", 422, body=agent_with(agent_id="a\n")),
    Bad("message_id of 129 chars", 422, body=agent_with(message_id="m" * 129)),
    Bad(
        "customer message_id with braces", 422, path=CUSTOMER, body=customer_with(message_id="{x}")
    ),
    Bad("GET on agent-message", 405, method="GET"),
    Bad("PUT on /events", 405, path="/events", method="PUT"),
    Bad("DELETE a conversation", 405, path="/conversations/c1", method="DELETE"),
    Bad("text/plain body", 415, content_type="text/plain"),
    Bad("form body", 415, path=CUSTOMER, content_type="application/x-www-form-urlencoded"),
    Bad("no content type", 415, content_type=None),
    Bad("wrong token", 401, token="token-c"),
    Bad("no token", 401, token=None),
    Bad("unknown route", 404, path="/conversations"),
    Bad("unknown route under a conversation", 404, path="/conversations/c1/escalate"),
    Bad("batch is an object", 400, path="/events", body=lambda: ITEM),
    Bad("batch is not JSON", 400, path="/events", raw=b"[{"),
    Bad("batch over 1000 items", 413, path="/events", body=lambda: [ITEM] * (MAX_BATCH + 1)),
    Bad("timeout_ms below the minimum", 422, body=agent_with(timeout_ms=99)),
    Bad("timeout_ms above the maximum", 422, body=agent_with(timeout_ms=7 * DAY_MS + 1)),
    Bad("timeout_ms zero", 422, body=agent_with(timeout_ms=0)),
    Bad("timeout_ms negative", 422, body=agent_with(timeout_ms=-1000)),
    Bad("timeout_ms is a string", 422, body=agent_with(timeout_ms="5000")),
    Bad("timeout_ms is a fraction", 422, body=agent_with(timeout_ms=1500.5)),
    Bad("timeout_ms is a float", 422, body=agent_with(timeout_ms=5000.0)),
    Bad("timeout_ms is a boolean", 422, body=agent_with(timeout_ms=True)),
    Bad("timeout_ms beyond 64 bits", 422, body=agent_with(timeout_ms=2**64 - 1)),
    Bad("timeout_ms overflows a double", 400, raw=b'{"agent_id":"a","timeout_ms":1e400}'),
    Bad(
        "timeout_ms beyond 64 bits, raw",
        422,
        raw=b'{"agent_id":"a","message_id":"m","timeout_ms":123456789012345678901234567890}',
    ),
]


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=[b.name for b in BAD_REQUESTS])
async def test_bad_request_gets_a_json_4xx_and_changes_nothing(
    auth_client: Client, redis: Redis, bad: Bad
) -> None:
    assert await data_keys(redis) == []
    keys_before = sorted(await redis.keys("*"))
    assert keys_before == [LAYOUT]  # recorded when the API started
    headers = {}
    if bad.content_type is not None:
        headers["Content-Type"] = bad.content_type
    if bad.token is not None:
        headers["Authorization"] = f"Bearer {bad.token}"
    data = bad.data() if bad.method in ("POST", "PUT") else None
    response = await auth_client.request(
        bad.method, bad.path, data=data, headers=headers, skip_auto_headers=["Content-Type"]
    )
    assert response.status == bad.status, await response.text()
    assert response.content_type == "application/json"
    assert_error(await response.json())
    assert sorted(await redis.keys("*")) == keys_before  # the key count is unchanged


# --- Redis down ----------------------------------------------------------------------------


@pytest.fixture
async def down_client(aiohttp_client: AiohttpClient, settings: Settings) -> AsyncIterator[Client]:
    """The app on a client whose Redis port nobody listens on."""
    closed = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", decode_responses=True, socket_connect_timeout=1
    )
    client = await aiohttp_client(create_app(settings, closed))
    yield client
    await closed.aclose()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", AGENT, agent_body("m1")),
        ("POST", CUSTOMER, customer_body("r1")),
        ("GET", "/conversations/c1", None),
        ("POST", "/events", [{"type": "agent_message", "conversation_id": "c1", **agent_body()}]),
    ],
)
async def test_redis_down_gives_503_with_retry_after(
    down_client: Client, method: str, path: str, body: Any
) -> None:
    response = await down_client.request(method, path, json=body)
    assert response.status == 503
    assert response.headers["Retry-After"].isdigit()
    assert_error(await response.json(), "unavailable")


async def test_redis_down_is_reported_by_ready_but_does_not_fail_it(down_client: Client) -> None:
    """Every pod shares the outage: none leaves the Service (tracker/readiness.py)."""
    status, body = await get(down_client, "/ready")
    assert status == 200
    assert body["status"] == "ready"
    assert body["redis"].startswith("unreachable: connection")


async def test_redis_down_leaves_health_alive(down_client: Client) -> None:
    assert await get(down_client, "/health") == (200, {"status": "ok"})
