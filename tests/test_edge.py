"""The API's edge as a hostile or careless client meets it (issue 13): a table of bad
requests, each sent as raw bytes over a real socket to the API as `tracker api` serves it
(`tracker.api.server.start`: the JSON parser errors, the timeouts), and a table of bad settings.

Every row states its status and error code; each request row also checks the JSON
envelope, the X-Request-ID echo, the request counted in http_requests_total, no warning or
traceback in the log, and Redis unchanged (every key and value, before and after).
Row names start with the issue item they show (13.1 ... 13.10) where there is one.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from tests.support.rawhttp import (
    AGENT,
    CUSTOMER,
    GOOD,
    TOKENS,
    Api,
    agent,
    api_settings,
    customer,
    exchange,
    http,
    js,
    read_reply,
    start_api,
)
from tests.support.redis_server import RedisServer, free_port
from tracker.api.app import create_app
from tracker.api.edge import EDGE, MAX_BODY
from tracker.api.server import start
from tracker.errors import ConfigError
from tracker.settings import Settings
from tracker.timefmt import format_ms

DAY_MS = 86_400_000


def stamp(offset_ms: int) -> str:
    return format_ms(int(time.time() * 1000) + offset_ms)


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


# --- the requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    name: str
    status: int
    code: str
    raw: bytes


ITEM = {"type": "agent_message", "conversation_id": "c1", "agent_id": "a", "message_id": "m"}
BIG_CHUNKED = b"".join(b"%x\r\n%s\r\n" % (65536, b"x" * 65536) for _ in range(17)) + b"0\r\n\r\n"
EXPECT = {"Expect": "100-continue"}
EXPECT_200 = {"Expect": "200-ok"}
CHUNKED = {"Transfer-Encoding": "chunked"}
MANY_HEADERS = {f"X-{i}": "y" for i in range(130)}
GZIP = {"Content-Encoding": "gzip"}
DEFLATE = {"Content-Encoding": "deflate"}


def line(start: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    """A request of a request line and a Host header."""
    return start + b" " + version + b"\r\nHost: tracker.test\r\n\r\n"


J, BODY, FIELD, AUTH = "invalid_json", "invalid_body", "invalid_field", "unauthorized"
TOO_BIG, MEDIA, ENCODING = "body_too_large", "unsupported_media_type", "unsupported_encoding"


def A(**fields: Any) -> bytes:
    """POST an agent message with these fields changed."""
    return http(body=agent(**fields))


def C(**fields: Any) -> bytes:
    """POST a customer response with these fields changed."""
    return http(path=CUSTOMER, body=customer(**fields))


def raw(body: bytes, **kwargs: Any) -> bytes:
    """POST an agent message of these bytes."""
    return http(body=body, **kwargs)


def at(path: str) -> bytes:
    """POST a good agent message to `path`."""
    return http(path=path, body=GOOD)


def get(path: str, **kwargs: Any) -> bytes:
    return http("GET", path, content_type=None, **kwargs)


def cl(value: str) -> bytes:
    """A good agent message with Content-Length: `value`."""
    return raw(GOOD).replace(b"Content-Length: %d" % len(GOOD), f"Content-Length: {value}".encode())


def ts(value: Any) -> bytes:
    return A(timestamp=value)


U16 = GOOD.decode()
REQUESTS = [
    # 13.7 only RFC 8259 JSON in UTF-8
    Bad("13.7 NaN", 400, J, raw(b'{"agent_id":"a","message_id":"m","x":NaN}')),
    Bad("13.7 Infinity", 400, J, raw(b'{"agent_id":"a","x":Infinity}')),
    Bad("13.7 -Infinity", 400, J, raw(b'{"agent_id":"a","x":-Infinity}')),
    Bad("13.7 bare NaN", 400, J, raw(b"NaN")),
    Bad("13.7 UTF-8 with a BOM", 400, J, raw(b"\xef\xbb\xbf" + GOOD)),
    Bad("13.7 UTF-16 LE with a BOM", 400, J, raw(U16.encode("utf-16"))),
    Bad("13.7 UTF-16 BE", 400, J, raw(U16.encode("utf-16-be"))),
    Bad("13.7 UTF-32", 400, J, raw(U16.encode("utf-32"))),
    Bad("13.7 Latin-1 byte", 400, J, raw(b'{"agent_id":"caf\xe9"}')),
    Bad("13.7 lone surrogate escape", 400, J, raw(b'{"agent_id":"\\ud800"}')),
    Bad("13.7 number beyond a double", 400, J, raw(b'{"timeout_ms":1e400}')),
    Bad("13.7 single quotes", 400, J, raw(b"{'agent_id': 'a'}")),
    Bad("13.7 trailing comma", 400, J, raw(b'{"agent_id":"a",}')),
    Bad("13.7 comment", 400, J, raw(b'{"agent_id":"a"} // x')),
    Bad("13.7 nested 2000 deep", 400, J, raw(b"[" * 2000 + b"]" * 2000)),
    Bad("13.7 control character", 400, J, raw(b'{"agent_id":"a\x01"}')),
    Bad("bad JSON", 400, J, raw(b'{"agent_id": "a1",')),
    Bad("trailing garbage", 400, J, raw(b'{"agent_id": "a1"} x')),
    Bad("empty body", 400, J, raw(b"")),
    Bad("JSON array", 400, BODY, raw(js([{"agent_id": "a"}]))),
    Bad("JSON string", 400, BODY, raw(b'"hello"')),
    Bad("JSON null", 400, BODY, raw(b"null")),
    Bad("JSON number", 400, BODY, raw(b"42")),
    Bad("customer body an array", 400, BODY, http(path=CUSTOMER, body=b"[]")),
    # fields
    Bad("agent_id a number", 422, FIELD, A(agent_id=42)),
    Bad("agent_id null", 422, FIELD, raw(b'{"agent_id":null,"message_id":"m"}')),
    Bad("message_id a list", 422, FIELD, A(message_id=["m1"])),
    Bad("message_id an object", 422, FIELD, A(message_id={"id": 1})),
    Bad("no agent_id", 422, FIELD, raw(b'{"message_id":"m"}')),
    Bad("no message_id", 422, FIELD, raw(b'{"agent_id":"a"}')),
    Bad("empty object", 422, FIELD, raw(b"{}")),
    Bad("agent_id empty", 422, FIELD, A(agent_id="")),
    Bad("agent_id with a pipe", 422, FIELD, A(agent_id="a|b")),
    Bad("agent_id with a newline", 422, FIELD, A(agent_id="a\n")),
    Bad("agent_id of 129", 422, FIELD, A(agent_id="a" * 129)),
    Bad("agent_id not ASCII", 422, FIELD, A(agent_id="café")),
    Bad("customer_id a number", 422, FIELD, C(customer_id=7)),
    Bad("no customer_id", 422, FIELD, http(path=CUSTOMER, body=b'{"message_id":"r"}')),
    Bad("customer message_id {x}", 422, FIELD, C(message_id="{x}")),
    Bad("timeout_ms 99", 422, FIELD, A(timeout_ms=99)),
    Bad("timeout_ms over 7 days", 422, FIELD, A(timeout_ms=7 * DAY_MS + 1)),
    Bad("timeout_ms a string", 422, FIELD, A(timeout_ms="5000")),
    Bad("timeout_ms 5e3, a float", 422, FIELD, raw(b'{"agent_id":"a","timeout_ms":5e3}')),
    Bad("timeout_ms true", 422, FIELD, A(timeout_ms=True)),
    Bad("timeout_ms 2**64-1", 422, FIELD, A(timeout_ms=2**64 - 1)),
    Bad("timeout_ms of 30 digits", 422, FIELD, raw(b'{"timeout_ms":%s}' % (b"1" * 30))),
    # 13.8 timestamps
    Bad("13.8 offset +05:60", 422, FIELD, ts("2026-01-01T10:00:00+05:60")),
    Bad("13.8 offset +24:00", 422, FIELD, ts("2026-01-01T10:00:00+24:00")),
    Bad("13.8 second 60 not at 23:59 UTC", 422, FIELD, ts("2026-06-30T12:00:60Z")),
    Bad("13.8 second 61", 422, FIELD, ts("2026-06-30T23:59:61Z")),
    Bad("timestamp epoch ms", 422, FIELD, ts(1_700_000_000_000)),
    Bad("timestamp true", 422, FIELD, ts(True)),
    Bad("timestamp without zone", 422, FIELD, ts(stamp(0)[:-1])),
    Bad("timestamp a date", 422, FIELD, ts(stamp(0)[:10])),
    Bad("timestamp in words", 422, FIELD, ts("yesterday at noon")),
    Bad("timestamp Feb 30", 422, FIELD, ts("2025-02-30T00:00:00Z")),
    Bad("timestamp hour 25", 422, FIELD, C(timestamp="2026-01-01T25:00:00Z")),
    Bad("timestamp ISO week", 422, FIELD, ts("2025-W01-1T00:00:00Z")),
    Bad("timestamp offset +0000", 422, FIELD, ts(stamp(0)[:-1] + "+0000")),
    Bad("timestamp decimal comma", 422, FIELD, ts("2026-01-01T10:00:00,5Z")),
    Bad("timestamp of 41 chars", 422, FIELD, ts("2026-01-01T10:00:00." + "1" * 20 + "Z")),
    Bad("timestamp an hour ahead", 422, FIELD, ts(stamp(3_600_000))),
    Bad("timestamp 366 days old", 422, FIELD, ts(stamp(-366 * DAY_MS))),
    # ids in the path
    Bad("id with braces", 422, FIELD, at("/conversations/%7Bc1%7D/agent-message")),
    Bad("id with a newline", 422, FIELD, at("/conversations/c1%0A/agent-message")),
    Bad("id with a space", 422, FIELD, at("/conversations/c%201/agent-message")),
    Bad("id with a slash", 422, FIELD, at("/conversations/a%2Fb/agent-message")),
    Bad("id with a NUL", 422, FIELD, at("/conversations/a%00b/agent-message")),
    Bad("id of 129", 422, FIELD, at(f"/conversations/{'c' * 129}/agent-message")),
    Bad("id not ASCII, encoded", 422, FIELD, at("/conversations/caf%C3%A9/agent-message")),
    Bad("id bad escape %ZZ", 422, FIELD, get("/conversations/%ZZ")),
    Bad("GET a bad id", 422, FIELD, get("/conversations/%7Bc1%7D")),
    # methods and routes
    Bad("GET agent-message", 405, "method_not_allowed", get(AGENT)),
    Bad("PUT /events", 405, "method_not_allowed", http("PUT", "/events", b"[]")),
    Bad("DELETE a conversation", 405, "method_not_allowed", http("DELETE", "/conversations/c1")),
    Bad("PROPFIND /events", 405, "method_not_allowed", http("PROPFIND", "/events")),
    Bad("unknown path", 404, "not_found", get("/conversations")),
    Bad("unknown sub-path", 404, "not_found", at("/conversations/c1/escalate")),
    Bad("unknown conversation", 404, "not_found", get("/conversations/nobody")),
    # 13.4 content type and encoding
    Bad("13.4 gzip that is not gzip", 400, BODY, raw(b"hello", headers=GZIP)),
    Bad("13.4 deflate that is not deflate", 400, BODY, raw(b"hello", headers=DEFLATE)),
    Bad("13.4 gzip cut in half", 400, J, raw(gz(GOOD)[:20], headers=GZIP)),
    Bad("13.4 gzip of NaN", 400, J, raw(gz(b"NaN"), headers=GZIP)),
    Bad("13.4 gzip over 1 MiB inflated", 413, TOO_BIG, raw(gz(b" " * 2 * MAX_BODY), headers=GZIP)),
    Bad("Content-Encoding lzw", 415, ENCODING, raw(GOOD, headers={"Content-Encoding": "lzw"})),
    Bad("Content-Encoding x-foo", 415, ENCODING, raw(GOOD, headers={"Content-Encoding": "x-foo"})),
    Bad("gzip twice", 415, ENCODING, raw(gz(gz(GOOD)), headers={"Content-Encoding": "gzip, gzip"})),
    Bad("text/plain", 415, MEDIA, raw(GOOD, content_type="text/plain")),
    Bad("form", 415, MEDIA, raw(b"a=1", content_type="application/x-www-form-urlencoded")),
    Bad("no Content-Type", 415, MEDIA, raw(GOOD, content_type=None)),
    # 13.1, 13.2 auth
    Bad("13.2 wrong token", 401, AUTH, raw(GOOD, token="token-c")),
    Bad("13.2 no token", 401, AUTH, raw(GOOD, token=None)),
    Bad("13.2 Bearer alone", 401, AUTH, raw(GOOD, auth="Bearer")),
    Bad("13.2 Bearer and spaces", 401, AUTH, raw(GOOD, auth="Bearer   ")),
    Bad("13.2 Basic scheme", 401, AUTH, raw(GOOD, auth=f"Basic {TOKENS[0]}")),
    Bad("13.2 token and a char", 401, AUTH, raw(GOOD, auth=f"Bearer {TOKENS[0]}x")),
    Bad("13.2 a prefix of a token", 401, AUTH, raw(GOOD, auth=f"Bearer {TOKENS[0][:-1]}")),
    Bad("13.2 both tokens", 401, AUTH, raw(GOOD, auth=f"Bearer {TOKENS[0]},{TOKENS[1]}")),
    Bad("13.2 token and a word", 401, AUTH, raw(GOOD, auth=f"Bearer {TOKENS[0]} extra")),
    Bad("13.2 token without scheme", 401, AUTH, raw(GOOD, auth=TOKENS[0])),
    Bad("13.2 GET without a token", 401, AUTH, get("/conversations/c1", token=None)),
    Bad("13.2 /events without a token", 401, AUTH, http(path="/events", body=b"[]", token=None)),
    # sizes
    Bad("body over 1 MiB", 413, TOO_BIG, A(pad="x" * MAX_BODY)),
    Bad("declared 10 MiB, not sent", 413, TOO_BIG, http(length=10 * MAX_BODY)),
    Bad("chunked over 1 MiB", 413, TOO_BIG, http(body=BIG_CHUNKED, chunked=True)),
    Bad("batch of 1001", 413, "batch_too_large", http(path="/events", body=js([ITEM] * 1001))),
    Bad("batch an object", 400, BODY, http(path="/events", body=js(ITEM))),
    Bad("batch not JSON", 400, J, http(path="/events", body=b"[{")),
    # 13.10 Expect, and a body that stops
    Bad("13.10 Expect, 10 MiB declared", 413, TOO_BIG, http(length=10 * MAX_BODY, headers=EXPECT)),
    Bad("13.10 Expect, wrong token", 401, AUTH, http(length=50, token="x", headers=EXPECT)),
    Bad("13.10 Expect: 200-ok", 417, "expectation_failed", http(length=50, headers=EXPECT_200)),
    Bad("13.10 body short of its length", 408, "body_timeout", raw(GOOD, length=len(GOOD) + 10)),
    # 13.9 what the HTTP parser refuses
    Bad("13.9 raw UTF-8 in the path", 400, "bad_url", line(b"GET /conversations/caf\xc3\xa9")),
    Bad("13.9 raw 0xff in the path", 400, "bad_url", line(b"GET /\xff")),
    Bad("13.9 target *", 400, "bad_url", line(b"GET *")),
    Bad("13.9 lower-case method", 400, "bad_method", line(b"get /health")),
    Bad("13.9 unknown method", 400, "bad_method", line(b"FOO /health")),
    Bad("13.9 TLS on the HTTP port", 400, "bad_method", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1"),
    Bad("13.9 URL over 8 KiB", 400, "line_too_long", line(b"GET /" + b"a" * 9000)),
    Bad("13.9 header over 8 KiB", 400, "line_too_long", get("/health", headers={"X": "a" * 9000})),
    Bad("13.9 Content-Length abc", 400, "bad_request", cl("abc")),
    Bad("13.9 Content-Length -1", 400, "bad_request", cl("-1")),
    Bad("13.9 two Content-Lengths", 400, "bad_request", raw(GOOD, headers={"content-length": "5"})),
    Bad("13.9 length and chunked", 400, "bad_request", raw(b"0\r\n\r\n", headers=CHUNKED)),
    Bad("13.9 a bad chunk size", 400, "bad_request", http(body=b"zz\r\nab\r\n", chunked=True)),
    Bad("13.9 space in a header name", 400, "bad_request", get("/health", headers={"A B": "y"})),
    Bad("13.9 NUL in a header", 400, "bad_request", get("/health", headers={"X-A": "a\x00b"})),
    Bad("13.9 130 headers", 400, "bad_request", get("/health", headers=MANY_HEADERS)),
    Bad("13.9 HTTP/9.9", 400, "bad_request", line(b"GET /health", b"HTTP/9.9")),
    Bad("13.9 bare LF line ends", 400, "bad_request", b"GET /health HTTP/1.1\nHost: x\n\n"),
    Bad("13.9 no Host", 400, "bad_request", b"GET /health HTTP/1.1\r\n\r\n"),
]  # fmt: skip


@pytest.fixture
async def api(redis_server: RedisServer, redis: Redis, tmp_path: Path) -> AsyncIterator[Api]:
    served, runner = await start_api(api_settings(redis_server.url, tmp_path / "run"), redis)
    yield served
    await runner.cleanup()


async def snapshot(redis: Redis) -> dict[str, Any]:
    """Every key with its type and value."""
    return {str(key): await value_of(redis, str(key)) for key in sorted(await redis.keys("*"))}


async def value_of(redis: Redis, key: str) -> tuple[str, Any]:
    kind = str(await redis.type(key))
    if kind == "string":
        return kind, await redis.get(key)
    if kind == "hash":
        return kind, await redis.hgetall(key)
    if kind == "zset":
        return kind, await redis.zrange(key, 0, -1, withscores=True)
    if kind == "set":
        return kind, await redis.smembers(key)
    if kind == "list":
        return kind, await redis.lrange(key, 0, -1)
    return kind, await redis.xrange(key)


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """No warning, error or traceback was logged."""
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]


@pytest.mark.parametrize("bad", REQUESTS, ids=[b.name for b in REQUESTS])
async def test_bad_request_gets_its_json_error_and_changes_nothing(
    api: Api, redis: Redis, caplog: pytest.LogCaptureFixture, bad: Bad
) -> None:
    caplog.set_level(logging.DEBUG)
    before = await snapshot(redis)
    counted = api.counted(bad.status)
    reply = await exchange(api.port, bad.raw)
    assert (reply.status, reply.json()["error"]["code"]) == (bad.status, bad.code), reply.body
    assert reply.headers["content-type"] == "application/json"
    assert set(reply.json()) == {"error"}
    assert set(reply.json()["error"]) == {"code", "message"}
    assert reply.json()["error"]["message"]
    assert reply.interim == []  # no 100 Continue before a refusal
    assert reply.headers["x-request-id"]
    assert api.counted(bad.status) == counted + 1
    assert await snapshot(redis) == before
    assert_quiet(caplog)


def test_the_table_holds_over_100_rows() -> None:
    assert len(REQUESTS) + len(SETTINGS_ROWS) >= 100
    assert len(REQUESTS) >= 100


# --- bad settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BadSetting:
    """Settings that must stop the process at start: ConfigError naming `variable`."""

    name: str
    variable: str
    env: dict[str, str]
    files: dict[str, bytes] = field(default_factory=dict)  # written in tmp_path; {dir} in env

    def environ(self, directory: Path) -> dict[str, str]:
        for name, content in self.files.items():
            (directory / name).write_bytes(content)
        return {k: v.replace("{dir}", str(directory)) for k, v in self.env.items()}


def S(name: str, variable: str, files: dict[str, bytes] | None = None, **env: str) -> BadSetting:
    return BadSetting(name, variable, env, files or {})


HOOK = {"NOTIFY_SINK": "webhook", "NOTIFY_WEBHOOK_URL": "https://hooks.example.test/t"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T, U, W, CA = "{dir}/t", "{dir}/u", "{dir}/w", "{dir}/ca"
TLS = "rediss://127.0.0.1:1/0"
SETTINGS_ROWS = [
    S("14.1 DELIVERY_LOG_LEVEL WARNING", "DELIVERY_LOG_LEVEL", DELIVERY_LOG_LEVEL="WARNING"),
    S("13.1 API_TOKEN of separators", "API_TOKEN", API_TOKEN=" , "),
    S("13.1 API_TOKEN empty", "API_TOKEN", API_TOKEN=""),
    S("13.1 API_TOKEN of spaces", "API_TOKEN", API_TOKEN="   "),
    S("13.1 API_TOKEN of commas", "API_TOKEN", API_TOKEN=",,,"),
    S("13.1 API_TOKEN with a space inside", "API_TOKEN", API_TOKEN="a b"),
    S("13.1 API_TOKEN not ASCII", "API_TOKEN", API_TOKEN="tökén"),
    S("13.1 API_TOKEN_FILE empty", "API_TOKEN_FILE", {"t": b""}, API_TOKEN_FILE=T),
    S("13.1 API_TOKEN_FILE blank", "API_TOKEN_FILE", {"t": b" \n\n"}, API_TOKEN_FILE=T),
    S("13.1 API_TOKEN_FILE of separators", "API_TOKEN", {"t": b" ,\n"}, API_TOKEN_FILE=T),
    S("13.3 API_TOKEN both ways", "API_TOKEN", {"t": b"b"}, API_TOKEN="a", API_TOKEN_FILE=T),
    S("13.3 API_TOKEN empty and a file", "API_TOKEN", {"t": b"b"}, API_TOKEN="", API_TOKEN_FILE=T),
    S("13.3 API_TOKEN_FILE missing", "API_TOKEN_FILE", API_TOKEN_FILE="{dir}/none"),
    S("13.3 API_TOKEN_FILE a directory", "API_TOKEN_FILE", API_TOKEN_FILE="{dir}"),
    S("13.3 API_TOKEN_FILE empty path", "API_TOKEN_FILE", API_TOKEN_FILE=" "),
    S("13.3 API_TOKEN_FILE not UTF-8", "API_TOKEN_FILE", {"t": b"\xff\xfe"}, API_TOKEN_FILE=T),
    S("13.3 REDIS_URL both ways", "REDIS_URL", {"u": b"redis://"}, REDIS_URL=TLS, REDIS_URL_FILE=U),
    S("13.11 REDIS_URL port not ASCII digits", "REDIS_URL", REDIS_URL="redis://h:\u00b2/0"),
    S("13.11 REDIS_URL db not ASCII digits", "REDIS_URL", REDIS_URL="redis://h:6379/\u00b2"),
    S("13.3 REDIS_URL_FILE empty", "REDIS_URL_FILE", {"u": b"\n"}, REDIS_URL_FILE=U),
    S("13.3 REDIS_URL_FILE not Redis", "REDIS_URL", {"u": b"http://h\n"}, REDIS_URL_FILE=U),
    S("13.3 webhook secret both ways", "NOTIFY_WEBHOOK_SECRET", {"w": SECRET.encode()},
      NOTIFY_WEBHOOK_SECRET=SECRET, NOTIFY_WEBHOOK_SECRET_FILE=W, **HOOK),
    S("13.3 webhook secret file empty", "NOTIFY_WEBHOOK_SECRET_FILE", {"w": b""},
      NOTIFY_WEBHOOK_SECRET_FILE=W, **HOOK),
    S("13.3 webhook secret file not whsec", "NOTIFY_WEBHOOK_SECRET", {"w": b"hunter2\n"},
      NOTIFY_WEBHOOK_SECRET_FILE=W, **HOOK),
    S("13.3 CA with redis://", "REDIS_TLS_CA_FILE", {"ca": b"x"},
      REDIS_URL="redis://h/0", REDIS_TLS_CA_FILE=CA),
    S("13.3 CA missing", "REDIS_TLS_CA_FILE", REDIS_URL=TLS, REDIS_TLS_CA_FILE="{dir}/none"),
    S("13.3 CA not PEM", "REDIS_TLS_CA_FILE", {"ca": b"no\n"}, REDIS_URL=TLS, REDIS_TLS_CA_FILE=CA),
    S("13.10 idle timeout 0", "HTTP_IDLE_TIMEOUT_MS", HTTP_IDLE_TIMEOUT_MS="0"),
    S("13.10 idle timeout forever", "HTTP_IDLE_TIMEOUT_MS", HTTP_IDLE_TIMEOUT_MS="forever"),
    S("13.10 idle timeout over an hour", "HTTP_IDLE_TIMEOUT_MS", HTTP_IDLE_TIMEOUT_MS="3600001"),
    S("13.10 body timeout -1", "HTTP_BODY_TIMEOUT_MS", HTTP_BODY_TIMEOUT_MS="-1"),
    S("15.11 ACCESS_LOG maybe", "ACCESS_LOG", ACCESS_LOG="maybe"),
]  # fmt: skip


@pytest.mark.parametrize("bad", SETTINGS_ROWS, ids=[b.name for b in SETTINGS_ROWS])
def test_bad_setting_is_a_config_error_naming_it(bad: BadSetting, tmp_path: Path) -> None:
    env = {"POD_ID": "p", "RUN_DIR": str(tmp_path / "run"), **bad.environ(tmp_path)}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(f"{bad.variable}:"), info.value
    assert "\n" not in str(info.value)


#: Those that would open the API or point it elsewhere: the real process, end to end.
STARTS = [b for b in SETTINGS_ROWS if b.name.startswith("13.1") or "both ways" in b.name][:6]


@pytest.mark.parametrize("bad", STARTS, ids=[b.name for b in STARTS])
async def test_bad_secret_stops_the_api_with_one_line_and_touches_nothing(
    bad: BadSetting, redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> None:
    before = await snapshot(redis)
    env = {
        "PATH": "/usr/bin:/bin",
        "REDIS_URL": redis_server.url,
        "RUN_DIR": str(tmp_path / "run"),
        "PORT": str(free_port()),
        **bad.environ(tmp_path),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tracker", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"configuration error: {bad.variable}:" in done.stderr
    assert await snapshot(redis) == before


# --- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [f"Bearer {TOKENS[0]}", f"Bearer  {TOKENS[0]}", f"Bearer\t{TOKENS[1]}", f"bearer {TOKENS[1]}"],
    ids=["one space", "two spaces", "a tab", "lower-case scheme"],
)
async def test_13_2_bearer_accepts_one_or_more_spaces(api: Api, header: str) -> None:
    reply = await exchange(api.port, http(body=agent(), auth=header))
    assert reply.status == 200, reply.body


async def test_13_2_tokens_are_compared_in_constant_time(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever is presented (right, wrong, a prefix, empty, very long), the check makes the
    same calls: one `hmac.compare_digest` per configured token, each of two 32-byte SHA-256
    digests, none skipped after a match. compare_digest's time depends only on the lengths,
    which are always 32: nothing about the tokens leaks through the time taken."""
    calls: list[tuple[int, int]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    presented = [TOKENS[0], TOKENS[1], "token-c", TOKENS[0][:-1], "", "x" * 5000, TOKENS[0] + "x"]
    for token in presented:
        calls.clear()
        reply = await exchange(api.port, http("GET", "/conversations/c1", auth=f"Bearer {token}"))
        assert reply.status == (404 if token in TOKENS else 401)
        assert calls == [(32, 32)] * len(TOKENS), token


# --- errors that are not the client's ----------------------------------------------------------


async def boom(request: web.Request) -> web.Response:
    raise ValueError("a bug")


async def test_13_5_an_unexpected_exception_is_a_json_500_logged_once_and_counted(
    redis_server: RedisServer, redis: Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = api_settings(redis_server.url, tmp_path / "run")
    app = create_app(settings, redis)
    app.router.add_get("/boom", app[EDGE].wrap(boom, "/boom"))
    runner = await start(app, settings)
    try:
        served = Api(settings.port, app)
        counted = served.counted(500)
        reply = await exchange(
            served.port, http("GET", "/boom", headers={"X-Request-ID": "req-500"})
        )
        assert (reply.status, reply.json()) == (
            500,
            {"error": {"code": "internal", "message": "internal error; see the server log"}},
        )
        assert reply.headers["x-request-id"] == "req-500"
        assert served.counted(500) == counted + 1
    finally:
        await runner.cleanup()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "a bug" in str(errors[0].exc_info[1])


async def test_13_5_a_redis_reply_error_that_is_not_an_outage_is_a_500_not_a_503(
    redis_server: RedisServer, redis: Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A user that may not run scripts gets NOPERM for every write: retrying cannot help,
    so it is a 500 (a 503 would tell clients to retry a bug), and Redis is unchanged."""
    await redis.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "noscripts", "on", ">pw", "~*", "&*", "+@all", "-evalsha", "-eval"
    )
    try:
        url = f"redis://noscripts:pw@127.0.0.1:{redis_server.port}/0"
        settings = api_settings(url, tmp_path / "run", API_TOKEN=TOKENS[0])
        limited = Redis.from_url(url, decode_responses=True)
        served, runner = await start_api(settings, limited)
        try:
            before = await snapshot(redis)
            reply = await exchange(served.port, http(body=agent(), token=TOKENS[0]))
            assert (reply.status, reply.json()["error"]["code"]) == (500, "internal")
            assert "retry-after" not in reply.headers
            assert await snapshot(redis) == before
        finally:
            await runner.cleanup()
            await limited.aclose()
    finally:
        await redis.execute_command("ACL", "DELUSER", "noscripts")  # type: ignore[no-untyped-call]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], NoPermissionError)


async def test_13_6_a_client_gone_mid_body_is_counted_499_not_a_redis_outage(
    api: Api, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = await snapshot(redis)
    counted = api.counted(499)
    _, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(http(body=GOOD, length=len(GOOD) + 100))
    await writer.drain()
    await asyncio.sleep(0.05)  # the handler is waiting for the rest of the body
    writer.close()
    deadline = asyncio.get_running_loop().time() + 5
    while api.counted(499) == counted:
        assert asyncio.get_running_loop().time() < deadline, "the abort was not counted"
        await asyncio.sleep(0.02)
    assert api.counted(499) == counted + 1
    assert await snapshot(redis) == before
    assert_quiet(caplog)
    gone = [r for r in caplog.records if "client went away" in r.getMessage()]
    assert len(gone) == 1
    assert gone[0].levelno == logging.DEBUG


# --- Expect: 100-continue -----------------------------------------------------------------------


async def test_13_10_expect_100_continue_then_the_body(api: Api) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    try:
        writer.write(http(length=len(GOOD), headers=EXPECT))
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(GOOD)
        reply = await asyncio.wait_for(read_reply(reader), 5)
        assert reply.status == 200
        assert reply.json()["status"] == "started"
    finally:
        writer.close()


# --- request ids -----------------------------------------------------------------------------


async def test_15_11_request_id_is_echoed_when_valid_and_made_otherwise(api: Api) -> None:
    def get(request_id: str | None) -> bytes:
        headers = {"X-Request-ID": request_id} if request_id is not None else {}
        return http("GET", "/health", content_type=None, headers=headers)

    given = "01J9ZC3Q-abc:def/123=="
    assert (await exchange(api.port, get(given))).headers["x-request-id"] == given
    made = set()
    for bad in (None, "", "has space", "a" * 129, "tab\tinside", "é"):
        reply = await exchange(api.port, get(bad))
        assert reply.status == 200
        assert reply.headers["x-request-id"] != bad
        assert reply.headers["x-request-id"].isprintable()
        made.add(reply.headers["x-request-id"])
    assert len(made) == 6  # each request its own
