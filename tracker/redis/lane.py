"""A pipelined connection for the API's hot path.

Concurrent batches of commands go out back to back on one dedicated connection and their
replies are matched in order, parsed by hiredis straight from the socket. redis-py's asyncio
pipeline pays a pool checkout, a retry wrapper, a shielded task and a timeout per batch
(about 90 µs of CPU for a one-event batch); here a batch costs a write and a future.

The connection is made as the client's own are (so AUTH, TLS, SELECT, client name and
Sentinel's master lookup are redis-py's), then read and written directly. Any failure fails
every batch in flight (their replies can no longer be matched) and the next batch opens a
new connection: the caller sees one of `connection.UNAVAILABLE` and answers 503.

On a Redis Cluster, `ClusterLane` keeps a lane to each master and sends each script call to
the one that serves its keys' slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis
from redis._parsers import BaseParser
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import (
    AskError,
    ConnectionError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from tracker.redis.connection import UNAVAILABLE, pack_command

Command = Sequence[str | int | float | bytes]
READ_CHUNK = 1 << 16
#: Bytes waiting in the socket's buffer above which a writer waits for it to drain.
HIGH_WATER = 1 << 20
DEFAULT_TIMEOUT_S = 5.0


@dataclass(slots=True)
class _Batch:
    size: int
    future: asyncio.Future[list[Any]]
    replies: list[Any] = field(default_factory=list)


class Lane:
    """One connection, many batches in flight, replies in order."""

    def __init__(self, make: Callable[[], AbstractConnection], timeout_s: float) -> None:
        self._make = make  # a new, unconnected connection
        self._timeout_s = timeout_s
        self._conn: AbstractConnection | None = None  # held: its __del__ would close it
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._opening: asyncio.Task[asyncio.StreamWriter] | None = None
        self._waiting: deque[_Batch] = deque()

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Each command's reply, in order; an error reply is returned in its place."""
        data = b"".join([part for c in commands for part in pack_command(tuple(c))])
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
            # a context of its own: not the request's that happened to open it (its log
            # lines would carry that request's id)
            self._opening = asyncio.create_task(self._connect(), context=contextvars.Context())
            self._opening.add_done_callback(_retrieve)
        return await asyncio.shield(self._opening)

    async def _connect(self) -> asyncio.StreamWriter:
        conn = self._make()
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            conn._close()  # type: ignore[no-untyped-call]  # a socket half set up
            raise
        reader, writer = conn._reader, conn._writer  # private: see the module doc
        if reader is None or writer is None:
            raise ConnectionError("the connection to Redis did not open")
        self._conn, self._writer = conn, writer
        reading = self._read(reader, writer)
        self._reading = asyncio.create_task(reading, context=contextvars.Context())
        return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader(encoding="utf-8", errors="surrogateescape")
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
            with contextlib.suppress(asyncio.CancelledError, *UNAVAILABLE):
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


#: Replies that mean "ask another node": the cluster client follows them.
REDIRECTED = (AskError, TryAgainError)  # MovedError is an AskError


class ClusterLane:
    """A lane to each master of a Redis Cluster. A batch's script calls go to the lane of
    the node serving their slot (a call's keys share one: the shard's hash tag) and their
    replies come back in the batch's order. A call answered MOVED, ASK or TRYAGAIN (slots on
    the move) ran nowhere: it is run again by the cluster client, which follows the
    redirection and updates its map of slots. A node that cannot be reached fails its calls
    (503), and the map is read again before the next batch (a replica may have taken over).
    """

    def __init__(self, cluster: RedisCluster, timeout_s: float) -> None:
        self._cluster = cluster
        self._timeout_s = timeout_s
        self._lanes: dict[str, Lane] = {}
        self._stale = False

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Each script call's reply, in order; an error reply is returned in its place."""
        await self._current()
        groups: dict[str, tuple[Lane, list[int]]] = {}
        for index, command in enumerate(commands):
            node = self._cluster.nodes_manager.get_node_from_slot(self._slot(command))
            if node.name not in groups:
                groups[node.name] = (self._lane(node), [])
            groups[node.name][1].append(index)
        outcomes = await asyncio.gather(
            *(lane.execute([commands[i] for i in indices]) for lane, indices in groups.values()),
            return_exceptions=True,
        )
        results: list[Any] = [None] * len(commands)
        for (_, indices), outcome in zip(groups.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, UNAVAILABLE):
                    self._stale = True
                raise outcome
            for index, reply in zip(indices, outcome, strict=True):
                results[index] = reply
        for index, reply in enumerate(results):
            if isinstance(reply, REDIRECTED):
                try:
                    results[index] = await self._cluster.execute_command(*commands[index])
                except ResponseError as exc:
                    results[index] = exc
        return results

    def _slot(self, command: Command) -> int:
        if str(command[0]).upper() not in ("EVAL", "EVALSHA") or not int(command[2]):
            raise ValueError("a cluster lane routes script calls by their first key")
        return self._cluster.keyslot(str(command[3]))

    def _lane(self, node: ClusterNode) -> Lane:
        lane = self._lanes.get(node.name)
        if lane is None:
            kwargs = dict(node.connection_kwargs)
            lane = Lane(lambda: node.connection_class(**kwargs), self._timeout_s)
            self._lanes[node.name] = lane
        return lane

    async def _current(self) -> None:
        """Read the cluster's map of slots again after a node failed; close the lanes of
        nodes that are no longer masters."""
        await self._cluster.initialize()  # the first time; again once redis-py saw a failure
        if not self._stale:
            return
        self._stale = False  # one batch reads the map; the others go on meanwhile
        try:
            await self._cluster.nodes_manager.initialize()
        except BaseException:
            self._stale = True
            raise
        masters = {node.name for node in self._cluster.get_primaries()}
        for name in [n for n in self._lanes if n not in masters]:
            await self._lanes.pop(name).aclose()

    async def aclose(self) -> None:
        for lane in self._lanes.values():
            await lane.aclose()
        self._lanes.clear()


AnyLane = Lane | ClusterLane


def lane_for(client: Redis | RedisCluster) -> AnyLane:
    """The lane beside `client`, with its socket timeout: one connection to a standalone
    server or Sentinel's master, one to each master of a Cluster."""
    if isinstance(client, RedisCluster):
        timeout = client.nodes_manager.connection_kwargs.get("socket_timeout")
        return ClusterLane(client, timeout or DEFAULT_TIMEOUT_S)
    pool = client.connection_pool
    make = cast(Callable[[], AbstractConnection], pool.make_connection)
    return Lane(make, pool.connection_kwargs.get("socket_timeout") or DEFAULT_TIMEOUT_S)
