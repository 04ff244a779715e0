"""Run the API application on uvloop until told to stop.

Connections: an idle one (no request yet, partial headers, or keep-alive between requests)
is closed after HTTP_IDLE_TIMEOUT_MS; a body gets HTTP_BODY_TIMEOUT_MS (`edge.read_json`).
A request aiohttp's HTTP parser refuses (a raw non-ASCII byte in the path, an unknown or
lower-case method, an over-long line, a bad Content-Length) never reaches a route: aiohttp
answers it itself, as text with an ERROR traceback in the log. `Connection` answers it with
the JSON envelope instead, logs one debug line, and counts it (route ``unparsed``).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, InvalidURLError, LineTooLong
from aiohttp.web_request import BaseRequest

from tracker.api.app import create_app
from tracker.api.edge import EDGE, REQUEST_ID_HEADER, Edge, error_response
from tracker.logs import REQUEST_ID
from tracker.settings import Settings

log = logging.getLogger(__name__)

MAX_LINE = 8190  # aiohttp's limit on the request line and on each header
UNPARSED = "unparsed"  # the route label of requests the parser refused


def parser_error(exc: BaseException | None) -> tuple[str, str]:
    """The code and message of a request the HTTP parser refused (never echoing it)."""
    if isinstance(exc, BadHttpMethod):
        return "bad_method", "the method is not an HTTP method (they are upper case)"
    if isinstance(exc, InvalidURLError):
        return "bad_url", "the path is not a URL path: percent-encode non-ASCII and spaces"
    if isinstance(exc, LineTooLong):
        return "line_too_long", f"the request line or a header is over {MAX_LINE} bytes"
    first = str(getattr(exc, "message", "") or "").split("\n", 1)[0].rstrip(":")
    if first.isascii() and first.isprintable() and 0 < len(first) <= 100:
        return "bad_request", f"the request cannot be parsed: {first}"
    return "bad_request", "the request cannot be parsed"


class Connection(web.RequestHandler):
    """aiohttp's connection handler, with parser errors answered as JSON (see above)."""

    edge: Edge

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp's: part of an answer went out
            raise ConnectionError("the response is sent already")
        request_id = self.edge.ids.new()
        REQUEST_ID.set(request_id)
        if status >= 500:
            log.error("unexpected error outside a route", exc_info=exc)
            code, text = "internal", "internal error; see the server log"
        else:
            code, text = parser_error(exc)
            log.debug("unparsable request code=%s peer=%s error=%r", code, request.remote, exc)
        response = error_response(status, code, text, {REQUEST_ID_HEADER: request_id})
        response.force_close()
        self.edge.tally.add(UNPARSED, "other", status, 0.0)
        return response


class _Server(web.Server):
    edge: Edge

    def __call__(self) -> web.RequestHandler:
        connection = Connection(self, loop=self._loop, **self._kwargs)
        connection.edge = self.edge
        return connection


def json_parser_errors(server: web.Server, edge: Edge) -> None:
    """Make `server` (the one `AppRunner.setup` built) open `Connection`s. aiohttp has no
    hook for its connection class; `_Server` adds nothing but `__call__`, its factory."""
    server.__class__ = _Server
    assert isinstance(server, _Server)
    server.edge = edge


async def start(
    app: web.Application, settings: Settings, shutdown_timeout: float = 5.0
) -> web.AppRunner:
    """`app` listening on HOST:PORT (SO_REUSEPORT, so several API processes can share it);
    stop it with the runner's `cleanup`."""
    runner = web.AppRunner(
        app,
        access_log=None,  # the edge logs requests when ACCESS_LOG=1
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=settings.http_idle_timeout_ms / 1000,
    )
    await runner.setup()
    try:
        assert runner.server is not None
        json_parser_errors(runner.server, app[EDGE])
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True, backlog=2048)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve(settings: Settings, stop: asyncio.Event, shutdown_timeout: float) -> None:
    runner = await start(create_app(settings), settings, shutdown_timeout)
    log.info("api listening host=%s port=%d pod=%s", settings.host, settings.port, settings.pod_id)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("api stopped pod=%s", settings.pod_id)
