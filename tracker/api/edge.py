"""The API's edge: what every request passes on its way in and out.

Each handler is wrapped once, at registration (a middleware would cost two more frames a
request). The wrapper gives the request an id, checks the bearer token, runs the handler,
turns every failure into the JSON error ``{"error": {"code", "message"}}`` with its
status, and counts the request. `read_json` is the one way a handler reads its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http import HttpVersion11

from tracker import metrics
from tracker.api import console
from tracker.errors import RequestError
from tracker.logs import REQUEST_ID
from tracker.redis.connection import error_kind, is_outage
from tracker.settings import Settings

log = logging.getLogger(__name__)
access = logging.getLogger("tracker.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]

MAX_BODY = 1024 * 1024
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/openapi.json"})
ENCODINGS = frozenset({"identity", "gzip", "deflate"})
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII, no spaces
#: The status a request is counted with when its client went away before the answer.
CLIENT_GONE = 499


class ClientGone(Exception):
    """The client closed the connection (or reset it) before its body arrived."""


class BodyError(RequestError):
    """A body that was not read to its end: the answer closes the connection."""


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


class RequestIds:
    """X-Request-ID as the client sent it (printable ASCII, at most 128 characters), else a
    new one: this process's random prefix and a counter (cheaper than a UUID a request)."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(6)
        self.counter = itertools.count(1)

    def of(self, request: web.Request) -> str:
        given = request.headers.get(REQUEST_ID_HEADER)
        if given is not None and _REQUEST_ID.fullmatch(given):
            return given
        return self.new()

    def new(self) -> str:
        return f"{self.prefix}-{next(self.counter):x}"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Edge:
    """The wrapper of every route of one application, and what it needs: the token digests,
    the body time limit, the request counter."""

    def __init__(self, settings: Settings, tally: metrics.HttpTally) -> None:
        self.digests = tuple(_digest(token) for token in settings.api_tokens)
        self.console_digests = tuple(_digest(token) for token in settings.console_tokens)
        self.body_timeout_s = settings.http_body_timeout_ms / 1000
        self.access_log = settings.access_log
        self.tally = tally
        self.ids = RequestIds()

    def wrap(self, handler: Handler, route: str) -> Handler:
        """`handler` as registered for `route`: authorize, run it, map every failure to the
        JSON envelope (Redis away: 503 + Retry-After; a bug: 500), count, echo the id."""

        async def at_the_edge(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            request_id = self.ids.of(request)
            REQUEST_ID.set(request_id)
            try:
                self.authorize(request)
                response = await handler(request)
            except Exception as exc:
                response = self.failure(request, route, exc)
            return self.finish(request, route, response, request_id, started)

        return at_the_edge

    def expect(self, route: str) -> ExpectHandler:
        """`Expect: 100-continue` for `route`: the token and the declared size are checked
        before ``100 Continue`` is sent, so a refused client never sends its body."""

        async def expect_continue(request: web.Request) -> web.StreamResponse | None:
            started = time.perf_counter()
            request_id = self.ids.of(request)
            REQUEST_ID.set(request_id)
            try:
                if request.headers.get("Expect", "").lower() != "100-continue":
                    raise RequestError(
                        417, "expectation_failed", "the only expectation is 100-continue"
                    )
                self.authorize(request)
                check_size(request)
            except RequestError as exc:
                response = error_response(exc.status, exc.code, exc.message, exc.headers)
                response.force_close()  # the body, if the client sends it anyway, is unread
                return self.finish(request, route, response, request_id, started)
            if request.version == HttpVersion11:
                with contextlib.suppress(OSError):  # gone: reading the body will tell (499)
                    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0  # as aiohttp's own: the answer is still to come
            return None

        return expect_continue

    def finish(
        self,
        request: web.Request,
        route: str,
        response: web.StreamResponse,
        request_id: str,
        started: float,
    ) -> web.StreamResponse:
        response.headers[REQUEST_ID_HEADER] = request_id
        elapsed = time.perf_counter() - started
        self.tally.add(route, request.method, response.status, elapsed)
        if self.access_log:
            access.info(
                "request method=%s path=%s route=%s status=%d ms=%.3f peer=%s",
                request.method,
                request.path,
                route,
                response.status,
                elapsed * 1000,
                request.remote,
            )
        return response

    def authorize(self, request: web.Request) -> None:
        """Bearer tokens (API_TOKEN, comma-separated for rotation), compared in constant time.

        The token sent and each configured one are compared as SHA-256 digests (32 bytes
        whatever the lengths) by `hmac.compare_digest`, against every configured token
        without stopping at a match: the time taken tells neither how much of a token was
        right, nor its length, nor which token matched. A CONSOLE_TOKEN (compared the same
        way) may only read the console's endpoints; the console's own files need none."""
        if not self.digests or request.path in OPEN_PATHS or console.is_asset(request.path):
            return
        header = request.headers.get("Authorization", "")
        bearer = header[:7].lower() in ("bearer ", "bearer\t")  # RFC 6750: then 1*SP
        presented = _digest(header[7:].lstrip(" \t"))
        ok = read_only = False
        for expected in self.digests:
            ok |= hmac.compare_digest(presented, expected)
        for expected in self.console_digests:
            read_only |= hmac.compare_digest(presented, expected)
        if bearer and read_only and not ok:
            console.check_read_only(request)
            return
        if not (ok and bearer):
            raise RequestError(
                401,
                "unauthorized",
                "a valid bearer token is required",
                {"WWW-Authenticate": 'Bearer realm="tracker"'},
            )

    def failure(self, request: web.Request, route: str, exc: Exception) -> web.Response:
        """The JSON answer to a handler's exception."""
        if isinstance(exc, RequestError):
            response = error_response(exc.status, exc.code, exc.message, exc.headers)
            if isinstance(exc, BodyError):
                response.force_close()
        elif isinstance(exc, web.HTTPException):
            code = exc.reason.lower().replace(" ", "_")
            headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
            response = error_response(exc.status, code, exc.reason, headers)
        elif isinstance(exc, ClientGone):
            log.debug("client went away route=%s error=%s", route, exc)
            return error_response(CLIENT_GONE, "client_gone", "the client closed the connection")
        elif is_outage(exc):
            log.warning("redis unavailable route=%s kind=%s error=%s", route, error_kind(exc), exc)
            response = error_response(
                503, "unavailable", "Redis is unavailable", {"Retry-After": "1"}
            )
        else:  # a bug, or a Redis reply that retrying cannot help (a script error, NOPERM)
            log.error("unexpected error route=%s method=%s", route, request.method, exc_info=exc)
            response = error_response(500, "internal", "internal error; see the server log")
        if not request.content.is_eof():
            response.force_close()  # the rest of the body would be read as the next request
        return response


EDGE = web.AppKey("edge", Edge)


def check_size(request: web.Request) -> None:
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise BodyError(413, "body_too_large", f"the body is over {MAX_BODY} bytes")


async def read_json(request: web.Request) -> Any:
    """The body as JSON: RFC 8259 in UTF-8 only (no NaN or Infinity, no byte order mark),
    at most MAX_BODY bytes, all of it within HTTP_BODY_TIMEOUT_MS."""
    if request.content_type != "application/json":
        raise RequestError(415, "unsupported_media_type", "Content-Type must be application/json")
    encoding = request.headers.get("Content-Encoding")
    if encoding is not None and encoding.lower() not in ENCODINGS:
        raise RequestError(
            415, "unsupported_encoding", "Content-Encoding must be gzip, deflate or identity"
        )
    check_size(request)
    body = await read_body(request)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            400, "invalid_json", f"the body is not JSON (RFC 8259, UTF-8): {exc}"
        ) from None


async def read_body(request: web.Request) -> bytes:
    try:
        if request.content.is_eof():  # all of it arrived with the headers: no timer needed
            return await request.read()
        async with asyncio.timeout(request.app[EDGE].body_timeout_s):
            return await request.read()
    except TimeoutError:
        raise BodyError(408, "body_timeout", "the body did not arrive in time") from None
    except web.HTTPRequestEntityTooLarge:
        raise BodyError(413, "body_too_large", f"the body is over {MAX_BODY} bytes") from None
    except web.RequestPayloadError as exc:  # bad gzip or deflate, a broken chunk
        # The parser stopped at the error and feeds this body no more: ending it here keeps
        # aiohttp from reading it again after the answer (and logging the error twice).
        request.content.feed_eof()
        reason = str(exc).strip().rsplit("\n", 1)[-1].strip()
        raise BodyError(400, "invalid_body", f"the body cannot be read: {reason}") from None
    except OSError as exc:  # the client closed or reset the connection
        raise ClientGone(str(exc) or type(exc).__name__) from None
