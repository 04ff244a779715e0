"""The HTTP API: aiohttp application, handlers, and the edge every request passes."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tracker import console, metrics, progress, validation
from tracker.connection import UNAVAILABLE, connect, is_outage
from tracker.errors import RequestError
from tracker.history import Level
from tracker.lane import lane_for
from tracker.openapi import document
from tracker.scripts import Scripts
from tracker.settings import Settings
from tracker.store import Conversation, Event, RespondResult, Result, Store
from tracker.timefmt import format_ms

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", Store)
TALLY = web.AppKey("tally", metrics.HttpTally)
TALLY_FLUSH_S = 1.0

MAX_BODY = 1024 * 1024
ANY_PATH = "/{path:.*}"
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/openapi.json"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def edge(handler: Handler, route: str) -> Handler:
    """`handler` as registered for `route`: authorize, run the handler, turn every failure
    into a JSON error (Redis away: 503 + Retry-After), count the request. A wrapper, not a
    middleware: aiohttp runs a middleware through two more frames a request."""

    async def at_the_edge(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            authorize(request)
            response = await handler(request)
        except RequestError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.headers)
        except web.HTTPException as exc:
            code = exc.reason.lower().replace(" ", "_")
            headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
            response = error_response(exc.status, code, exc.reason, headers)
        except UNAVAILABLE as exc:
            log.warning("redis unavailable path=%s error=%s", request.path, exc)
            response = error_response(
                503, "unavailable", "Redis is unavailable", {"Retry-After": "1"}
            )
        except RedisError as exc:
            if is_outage(exc):  # full, loading, read-only...: it will answer again
                log.warning("redis refused path=%s error=%s", request.path, exc)
            else:
                log.exception("redis error path=%s", request.path)
            response = error_response(
                503, "unavailable", "Redis refused the request", {"Retry-After": "1"}
            )
        request.app[TALLY].add(
            route, request.method, response.status, time.perf_counter() - started
        )
        return response

    return at_the_edge


async def unmatched(request: web.Request) -> web.StreamResponse:
    """Every request no route takes: 405 with the methods the path allows, or 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:  # not this catch-all
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def authorize(request: web.Request) -> None:
    """Bearer tokens (API_TOKEN, comma-separated for rotation), compared in constant time."""
    tokens = request.app[SETTINGS].api_tokens
    if not tokens or request.path in OPEN_PATHS or console.is_asset(request.path):
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    ok = False
    for expected in tokens:
        ok |= hmac.compare_digest(token.encode(), expected.encode())
    if scheme.lower() != "bearer" or not ok:
        # CONSOLE_TOKEN: read-only, GET under /admin and /console
        console_tokens = request.app[SETTINGS].console_tokens
        if scheme.lower() == "bearer" and console.read_only_grants(request, token, console_tokens):
            return
        raise RequestError(
            401,
            "unauthorized",
            "a valid bearer token is required",
            {"WWW-Authenticate": 'Bearer realm="tracker"'},
        )


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise RequestError(415, "unsupported_media_type", "Content-Type must be application/json")
    body = await request.read()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:  # orjson refuses integers beyond 64 bits, which are valid JSON: validation decides
        return json.loads(body)
    except (ValueError, RecursionError):
        raise RequestError(400, "invalid_json", "the body is not valid JSON") from None


def result_json(conversation_id: str, result: Result) -> dict[str, Any]:
    if isinstance(result, RespondResult):
        return {
            "conversation_id": conversation_id,
            "status": result.status,
            "generation": result.generation,
            "response_time_ms": result.response_time_ms,
        }
    return {
        "conversation_id": conversation_id,
        "status": result.status,
        "generation": result.generation,
        "waiting_since": format_ms(result.waiting_since_ms),
        "next_due_at": format_ms(result.next_due_ms) if result.next_due_ms is not None else None,
    }


def observe(result: Result) -> None:
    if isinstance(result, RespondResult) and result.status == "answered":
        metrics.RESPONSE_TIME.observe((result.response_time_ms or 0) / 1000)


async def apply_one(request: web.Request, event: Event) -> web.Response:
    result = await request.app[STORE].apply(event)
    observe(result)
    return json_response(result_json(event.conversation_id, result))


async def agent_message(request: web.Request) -> web.Response:
    body = await read_json(request)
    settings = request.app[SETTINGS]
    return await apply_one(
        request, validation.agent_message(request.match_info["id"], body, settings)
    )


async def customer_response(request: web.Request) -> web.Response:
    body = await read_json(request)
    return await apply_one(request, validation.customer_response(request.match_info["id"], body))


async def events(request: web.Request) -> web.Response:
    """Bulk ingest: one result per item, in order; a bad item is rejected alone."""
    items = validation.batch(await read_json(request))
    settings = request.app[SETTINGS]
    out: list[dict[str, Any]] = []
    good: list[tuple[int, Event]] = []
    for index, item in enumerate(items):
        try:
            good.append((index, validation.batch_item(item, settings)))
            out.append({})
        except RequestError as exc:
            out.append(
                {
                    "index": index,
                    "status": "error",
                    "error": {"code": exc.code, "message": exc.message},
                }
            )
    results = await request.app[STORE].apply_many([e for _, e in good])
    for (index, event), result in zip(good, results, strict=True):
        observe(result)
        out[index] = {
            "index": index,
            "status": "ok",
            "result": result_json(event.conversation_id, result),
        }
    return json_response({"results": out})


async def get_conversation(request: web.Request) -> web.Response:
    store = request.app[STORE]
    conversation = await _conversation(request)
    return json_response(conversation_json(conversation, store.levels(conversation)))


async def get_history(request: web.Request) -> web.Response:
    store = request.app[STORE]
    conversation = await _conversation(request)
    return json_response(
        {
            "conversation_id": conversation.conversation_id,
            "history": store.timeline(conversation),
        }
    )


async def _conversation(request: web.Request) -> Conversation:
    conversation_id = validation.check_id(request.match_info["id"], "conversation_id")
    conversation = await request.app[STORE].get(conversation_id)
    if conversation is None:
        raise RequestError(404, "not_found", "no such conversation")
    return conversation


def conversation_json(c: Conversation, levels: list[Level]) -> dict[str, Any]:
    delivered = [v.level for v in levels if v.status == "delivered"]
    return {
        "conversation_id": c.conversation_id,
        "state": c.state,
        "generation": c.generation,
        "agent_id": c.agent_id,
        "message_id": c.message_id,
        "waiting_since": format_ms(c.waiting_since_ms),
        "timeout_ms": c.timeout_ms,
        "level_fired": c.level_fired,
        "level_delivered": max(delivered, default=0),
        "next_due_at": format_ms(c.next_due_ms) if c.next_due_ms is not None else None,
        "response_time_ms": c.response_time_ms,
        "levels": [v.json() for v in levels],
    }


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), timeout=1.0)
    except (TimeoutError, *UNAVAILABLE, RedisError):
        return error_response(503, "unavailable", "Redis is unreachable", {"Retry-After": "1"})
    stale = progress.stale_shards(settings)
    if stale:
        shards = ", ".join(str(s) for s in stale)
        return error_response(503, "not_sweeping", f"shards not swept recently: {shards}")
    return json_response({"status": "ready"})


async def metrics_handler(request: web.Request) -> web.Response:
    request.app[TALLY].flush()  # this process's requests up to now; the others' lag <= 1 s
    body, content_type = await asyncio.get_running_loop().run_in_executor(None, metrics.exposition)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def openapi(request: web.Request) -> web.Response:
    return json_response(document(request.app[SETTINGS]))


def create_app(settings: Settings, redis: Redis | None = None) -> web.Application:
    """The application; it opens its own Redis client unless one is given."""
    app = web.Application(client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    client = redis if redis is not None else connect(settings)
    app[REDIS] = client
    lane = lane_for(client)
    app[STORE] = Store(client, settings, Scripts(), lane=lane)
    app.on_cleanup.append(lambda _: lane.aclose())
    app[TALLY] = metrics.HttpTally()
    from tracker.admin import ROUTES as ADMIN_ROUTES  # it imports this module

    # Any id reaches its handler, so a malformed one gets a 422 that says why, not a 404.
    for method, path, handler in (
        ("POST", "/conversations/{id:[^/]+}/agent-message", agent_message),
        ("POST", "/conversations/{id:[^/]+}/customer-response", customer_response),
        ("GET", "/conversations/{id:[^/]+}", get_conversation),
        ("GET", "/conversations/{id:[^/]+}/history", get_history),
        ("POST", "/events", events),
        ("GET", "/health", health),
        ("GET", "/ready", ready),
        ("GET", "/metrics", metrics_handler),
        ("GET", "/openapi.json", openapi),
        *ADMIN_ROUTES,  # the operator's /admin endpoints and the /console page
        ("*", ANY_PATH, unmatched),  # last: the others are matched first
    ):
        resource = app.router.add_resource(path)
        wrapped = edge(handler, "unmatched" if handler is unmatched else resource.canonical)
        resource.add_route(method, wrapped)
        if method == "GET":
            resource.add_route("HEAD", wrapped)  # as router.add_get does
    app.cleanup_ctx.append(_follow_layout)
    app.cleanup_ctx.append(_flush_tally)
    if redis is None:
        app.on_cleanup.append(_close_redis)
    return app


LAYOUT_AT_START_S = 2.0  # Redis away at start: do not wait for it, the follower loads it later


async def _follow_layout(app: web.Application) -> AsyncIterator[None]:
    """Keep the store's shard layout current (a reshard changes it); when Redis answers at
    start, the layout is loaded before the first request."""
    with contextlib.suppress(TimeoutError, RedisError):  # the follower loads it later
        await asyncio.wait_for(app[STORE].layout.refresh(), LAYOUT_AT_START_S)
    task = asyncio.create_task(app[STORE].layout.follow())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _flush_tally(app: web.Application) -> AsyncIterator[None]:
    """Write the HTTP request metrics every TALLY_FLUSH_S, and once more at shutdown."""

    async def every_second() -> None:
        while True:
            await asyncio.sleep(TALLY_FLUSH_S)
            app[TALLY].flush()

    task = asyncio.create_task(every_second())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    app[TALLY].flush()


async def _close_redis(app: web.Application) -> None:
    await app[REDIS].aclose()
