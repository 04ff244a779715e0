"""A pipelined connection for the API's hot path.

Concurrent batches of commands go out back to back on one dedicated connection and their
replies are matched in order, parsed by hiredis straight from the socket. redis-py's asyncio
pipeline pays a pool checkout, a retry wrapper, a shielded task and a timeout per batch
(about 90 µs of CPU for a one-event batch); here a batch costs a write and a future.

The connection is made by the client's own pool (so AUTH, TLS, SELECT, client name and
Sentinel's master lookup are redis-py's), then read and written directly. Any failure fails
every batch in flight (their replies can no longer be matched) and the next batch opens a
new connection: the caller sees one of `connection.UNAVAILABLE` and answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis
from redis._parsers import BaseParser
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

Command = Sequence[str | int | float]
#: hiredis's packer (its stub types the argument as a 1-tuple).
_pack = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)
READ_CHUNK = 1 << 16
#: Bytes waiting in the socket's buffer above which a writer waits for it to drain.
HIGH_WATER = 1 << 20
DEFAULT_TIMEOUT_S = 5.0
#: What a failed attempt to open the connection raises.
UNAVAILABLE_ON_OPEN = (ConnectionError, RedisTimeoutError, OSError)


@dataclass(slots=True)
class _Batch:
    size: int
    future: asyncio.Future[list[Any]]
    replies: list[Any] = field(default_factory=list)


class Lane:
    """One connection, many batches in flight, replies in order."""

    def __init__(self, pool: ConnectionPool, timeout_s: float) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        self._conn: AbstractConnection | None = None  # held: its __del__ would close it
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._opening: asyncio.Task[asyncio.StreamWriter] | None = None
        self._waiting: deque[_Batch] = deque()

    @classmethod
    def of(cls, client: Redis) -> Lane | None:
        """A lane beside `client`'s pool, with its socket timeout; None for a Cluster
        (batches span nodes there)."""
        if isinstance(client, RedisCluster):
            return None
        pool = client.connection_pool
        return cls(pool, pool.connection_kwargs.get("socket_timeout") or DEFAULT_TIMEOUT_S)

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Each command's reply, in order; an error reply is returned in its place."""
        data = b"".join([_pack(tuple(c)) for c in commands])
        writer = self._writer if self._writer is not None else await self._open()
        batch = _Batch(len(commands), asyncio.get_running_loop().create_future())
        self._waiting.append(batch)
        try:
            writer.write(data)
            if writer.transport.get_write_buffer_size() > HIGH_WATER:
                await writer.drain()
        except (OSError, RuntimeError) as exc:
            self._reset(ConnectionError(f"writing to Redis failed: {exc}"), writer)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await batch.future
        except TimeoutError:  # the builtin, from asyncio.timeout: Redis did not answer in time
            error = RedisTimeoutError(f"Redis did not answer within {self._timeout_s}s")
            self._reset(error, writer)
            raise error from None

    async def _open(self) -> asyncio.StreamWriter:
        """The connection, opened once for every batch that asks meanwhile: while Redis is
        away they all fail with the same attempt instead of queueing one attempt each."""
        if self._opening is None or self._opening.done():
            self._opening = asyncio.create_task(self._connect())
            self._opening.add_done_callback(_retrieve)
        return await asyncio.shield(self._opening)

    async def _connect(self) -> asyncio.StreamWriter:
        conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        await conn.connect()  # type: ignore[no-untyped-call]
        reader, writer = conn._reader, conn._writer  # private: see the module doc
        if reader is None or writer is None:
            raise ConnectionError("the connection to Redis did not open")
        self._conn, self._writer = conn, writer
        self._reading = asyncio.create_task(self._read(reader, writer))
        return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader(encoding="utf-8")
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                parser.feed(data)
                reply = parser.gets()
                while reply is not False:
                    self._deliver(reply)
                    reply = parser.gets()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc if isinstance(exc, ConnectionError) else ConnectionError(str(exc))
            self._reset(error, writer)

    def _deliver(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            reply = BaseParser.parse_error(reply.args[0])  # type: ignore[no-untyped-call]
            if isinstance(reply, ReadOnlyError):  # a replica now (Sentinel failover)
                moved = ConnectionError("Redis is read-only: the master moved")
                asyncio.get_running_loop().call_soon(self._reset, moved, self._writer)
        if not self._waiting:
            raise ConnectionError("a reply from Redis that nothing asked for")
        batch = self._waiting[0]
        batch.replies.append(reply)
        if len(batch.replies) == batch.size:
            self._waiting.popleft()
            if not batch.future.done():
                batch.future.set_result(batch.replies)

    def _reset(self, error: Exception, writer: asyncio.StreamWriter | None = None) -> None:
        """Drop the connection (if still `writer`'s) and fail every batch in flight."""
        if writer is not None and writer is not self._writer:
            return  # that connection is gone already, and its batches failed with it
        if self._conn is not None:
            self._conn._close()  # type: ignore[no-untyped-call]  # closes and forgets its socket
        if self._reading is not None and self._reading is not asyncio.current_task():
            self._reading.cancel()
        self._conn = self._writer = self._reading = None
        waiting, self._waiting = self._waiting, deque()
        for batch in waiting:
            if not batch.future.done():
                batch.future.set_exception(error)

    async def aclose(self) -> None:
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
            with contextlib.suppress(asyncio.CancelledError, *UNAVAILABLE_ON_OPEN):
                await self._opening
        reading = self._reading
        self._reset(ConnectionError("the lane is closed"))
        if reading is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reading


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark an attempt's failure as seen (its waiters may all have been cancelled)."""
    if not task.cancelled():
        task.exception()
