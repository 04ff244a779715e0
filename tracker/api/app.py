"""The HTTP API: the aiohttp application, its routes and handlers (each wrapped by the edge)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from tracker import metrics
from tracker.api import validation
from tracker.api.edge import EDGE, MAX_BODY, Edge, json_response, read_json
from tracker.api.openapi import document
from tracker.errors import RequestError
from tracker.model import (
    Conversation,
    Event,
    RespondResult,
    Result,
    conversation_json,
    result_json,
)
from tracker.pod.podmetrics import PodCollector
from tracker.pod.readiness import assess
from tracker.redis.connection import UNAVAILABLE, Client, close, connect, error_kind
from tracker.redis.lane import lane_for
from tracker.settings import Settings
from tracker.state.store import Store

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
REDIS: web.AppKey[Client] = web.AppKey("redis")
STORE = web.AppKey("store", Store)
TALLY = web.AppKey("tally", metrics.HttpTally)
OPENAPI = web.AppKey("openapi", bytes)  # the document, built once: settings never change
TALLY_FLUSH_S = 1.0

ANY_PATH = "/{path:.*}"


async def unmatched(request: web.Request) -> web.StreamResponse:
    """Every request no route takes: 405 with the methods the path allows, or 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:  # not this catch-all
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


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


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """This pod's own processes up and making progress; a Redis outage, which every pod
    shares, is reported in the body, not failed on (tracker/readiness.py)."""
    redis_error = None
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), timeout=1.0)
    except (TimeoutError, *UNAVAILABLE, RedisError) as exc:
        redis_error = f"{error_kind(exc)}: {exc}" if str(exc) else error_kind(exc)
    loop = asyncio.get_running_loop()
    verdict = await loop.run_in_executor(None, assess, request.app[SETTINGS], redis_error)
    return json_response(verdict.body(), 200 if verdict.ready else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    request.app[TALLY].flush()  # this process's requests up to now; the others' lag <= 1 s
    pod = PodCollector(request.app[SETTINGS], request.app[STORE].layout.current.span)
    loop = asyncio.get_running_loop()
    body, content_type = await loop.run_in_executor(None, metrics.exposition, pod)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


def create_app(settings: Settings, redis: Client | None = None) -> web.Application:
    """The application; it opens its own Redis client unless one is given."""
    app = web.Application(client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    app[OPENAPI] = orjson.dumps(document(settings))
    client = redis if redis is not None else connect(settings)
    app[REDIS] = client
    lane = lane_for(client)
    app[STORE] = Store(client, settings, lane=lane)
    app.on_cleanup.append(lambda _: lane.aclose())
    app[TALLY] = metrics.HttpTally()
    app[EDGE] = edge = Edge(settings, app[TALLY])
    from tracker.api.admin import ROUTES as ADMIN_ROUTES  # it imports this module

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
        route = "unmatched" if handler is unmatched else resource.canonical
        wrapped, expect = edge.wrap(handler, route), edge.expect(route)
        resource.add_route(method, wrapped, expect_handler=expect)
        if method == "GET":
            resource.add_route("HEAD", wrapped, expect_handler=expect)  # as router.add_get does
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
    await close(app[REDIS])
