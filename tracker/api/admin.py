"""The operator's JSON endpoints (`/admin/...`), which the web console reads, and the
console's files. The answers are the CLI's (`tracker.ops`): the same data, as JSON."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from tracker.api import console
from tracker.api.app import REDIS, SETTINGS, STORE
from tracker.api.edge import json_response, read_json
from tracker.api.validation import check_id, invalid
from tracker.errors import RequestError
from tracker.ops import arguments
from tracker.ops import conversation as conversation_ops
from tracker.ops import dead_letters as dl
from tracker.ops import pending as pending_ops
from tracker.ops import status as status_ops
from tracker.ops.schema import MAX_IDS, MAX_LIMIT
from tracker.redis.connection import redis_time_ms

T = TypeVar("T", int, None)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def status(request: web.Request) -> web.Response:
    return json_response(await status_ops.report(request.app[REDIS], request.app[SETTINGS]))


async def pending(request: web.Request) -> web.Response:
    redis = request.app[REDIS]
    shards = await _shards(request)
    shard = _integer(request, "shard", None, 0, len(shards) - 1)
    limit = _integer(request, "limit", 100, 1, MAX_LIMIT)
    listing = await pending_ops.list_pending(redis, shards if shard is None else [shard], limit)
    now = await redis_time_ms(redis)
    return json_response(
        {"total": listing.total, "pending": [p.to_json(now) for p in listing.items]}
    )


async def dead_letters(request: web.Request) -> web.Response:
    redis = request.app[REDIS]
    query = request.query
    conversation = query.get("conversation") or None
    if conversation is not None:
        check_id(conversation, "conversation")
    since_ms = None
    if query.get("since"):
        try:
            since_ms = await arguments.since(query["since"]).resolve(redis)
        except argparse.ArgumentTypeError as exc:
            raise invalid(f"since: {exc}") from None
    listing = await dl.list_dead_letters(
        redis,
        await _shards(request),
        _integer(request, "limit", 100, 1, MAX_LIMIT),
        conversation=conversation,
        since_ms=since_ms,
    )
    return json_response(
        {"total": listing.total, "dead_letters": [d.to_json() for d in listing.items]}
    )


async def replay(request: web.Request) -> web.Response:
    letters = await _named(request)
    done = await dl.replay_letters(request.app[REDIS], letters)
    return json_response({"replayed": done.replayed, "refused": done.refused, "gone": done.gone})


async def purge(request: web.Request) -> web.Response:
    letters = await _named(request)
    return json_response({"purged": await dl.purge_letters(request.app[REDIS], letters)})


async def conversation(request: web.Request) -> web.Response:
    """One conversation by `?id=` (a query parameter: an id such as ``..`` in the path
    would be read as a relative path by browsers)."""
    conversation_id = check_id(request.query.get("id"), "id")
    report = await conversation_ops.report(request.app[STORE], conversation_id)
    if report is None:
        raise RequestError(404, "not_found", "no such conversation")
    return json_response(report)


async def _named(request: web.Request) -> list[dl.DeadLetter]:
    """The body's `{"ids": [...]}`: every one a dead letter now, or 404 and nothing done."""
    body = await read_json(request)
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_IDS:
        raise invalid(f'the body must be {{"ids": [1 to {MAX_IDS} dead-letter ids]}}')
    if not all(isinstance(i, str) for i in ids):
        raise invalid("ids must be strings")
    try:
        parsed = dl.parse_ids(ids)
    except dl.BadId as exc:
        raise invalid(str(exc), "invalid_id") from None
    found = await dl.find(request.app[REDIS], await _shards(request), parsed)
    if found.unknown:
        raise RequestError(404, "not_found", f"no such dead letter: {', '.join(found.unknown)}")
    return found.letters


async def _shards(request: web.Request) -> list[int]:
    return list((await request.app[STORE].layout.refresh()).shards())


def _integer(request: web.Request, name: str, default: T, low: int, high: int) -> int | T:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise invalid(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


ROUTES: list[tuple[str, str, Handler]] = [
    *(("GET", path, console.asset) for path in console.ASSETS),
    ("GET", "/admin/status", status),
    ("GET", "/admin/pending", pending),
    ("GET", "/admin/dead-letters", dead_letters),
    ("POST", "/admin/dead-letters/replay", replay),
    ("POST", "/admin/dead-letters/purge", purge),
    ("GET", "/admin/conversation", conversation),
]
