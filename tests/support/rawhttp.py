"""The API as a client on the wire sees it: raw HTTP/1.1 requests over a real socket to the
application served as `tracker api` serves it (`tracker.api.server.start`), on the test's Redis."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.support.redis_server import free_port
from tracker.api.app import TALLY, create_app
from tracker.api.server import start
from tracker.settings import Settings

TOKENS = ("token-a", "token-b")
AGENT = "/conversations/c1/agent-message"
CUSTOMER = "/conversations/c1/customer-response"
BODY_TIMEOUT_MS = 500


# --- a raw HTTP/1.1 client ------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx answers before the final one

    def json(self) -> Any:
        return orjson.loads(self.body)


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    interim: list[int] = []
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            interim.append(status)
            continue
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Reply(status, headers, body, interim)


async def exchange(port: int, raw: bytes, timeout: float = 10.0) -> Reply:
    """Send `raw` on a new connection and read one answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(read_reply(reader), timeout)
    finally:
        writer.close()


def http(
    method: str = "POST",
    path: str = AGENT,
    body: bytes = b"",
    *,
    token: str | None = TOKENS[1],
    auth: str | None = None,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
    length: int | None = None,
    chunked: bool = False,
) -> bytes:
    """A request as bytes; `length` overrides the Content-Length of `body`; `chunked` sends
    `body` (chunks already) with Transfer-Encoding instead."""
    lines = [f"{method} {path} HTTP/1.1", "Host: tracker.test"]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    elif token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif body or length is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def js(value: Any) -> bytes:
    return orjson.dumps(value)


def agent(**fields: Any) -> bytes:
    """A valid agent message body with `fields` changed (None deletes a field)."""
    body: dict[str, Any] = {"agent_id": "agent-1", "message_id": "m1"}
    body.update(fields)
    return js({k: v for k, v in body.items() if v is not None})


GOOD = agent()


def customer(**fields: Any) -> bytes:
    body: dict[str, Any] = {"customer_id": "customer-1", "message_id": "r1"}
    body.update(fields)
    return js({k: v for k, v in body.items() if v is not None})


@dataclass
class Api:
    port: int
    app: web.Application

    def counted(self, status: int) -> float:
        """http_requests_total summed over routes and methods, for `status`."""
        self.app[TALLY].flush()
        total = 0.0
        for metric in REGISTRY.collect():
            for sample in metric.samples:
                if sample.name == "http_requests_total" and sample.labels["status"] == str(status):
                    total += sample.value
        return total


async def start_api(settings: Settings, redis: Redis) -> tuple[Api, web.AppRunner]:
    app = create_app(settings, redis)
    runner = await start(app, settings)
    return Api(settings.port, app), runner


def api_settings(redis_url: str, run_dir: Path, **env: str) -> Settings:
    defaults = {
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "API_TOKEN": ",".join(TOKENS),
        "HTTP_BODY_TIMEOUT_MS": str(BODY_TIMEOUT_MS),
    }
    return make_settings(redis_url, run_dir, **{**defaults, **env})
