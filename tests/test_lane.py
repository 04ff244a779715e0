"""The API's pipelined connection: replies matched to their batches, errors in place, and
recovery from a restart, a stall and a demotion of its Redis."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.conftest import make_settings
from tests.support.redis_server import RedisServer, free_port
from tracker.model import AgentMessage, TrackResult
from tracker.redis.connection import UNAVAILABLE, connect
from tracker.redis.lane import Lane, lane_for
from tracker.state.store import Store


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own, to restart, stop and demote."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def lane_on(server: RedisServer, tmp_path: Path) -> AsyncIterator[tuple[Redis, Lane]]:
    """A client (0.5 s socket timeout) and the lane beside it, both closed afterwards."""
    client = connect(make_settings(server.url, tmp_path / "run"), socket_timeout=0.5)
    assert isinstance(client, Redis)
    lane = lane_for(client)
    assert isinstance(lane, Lane)
    try:
        yield client, lane
    finally:
        await lane.aclose()
        await client.aclose()


async def test_concurrent_batches_get_their_own_replies_in_order(
    redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> None:
    async with lane_on(redis_server, tmp_path) as (_, lane):

        async def batch(i: int) -> list[object]:
            return await lane.execute(
                [("INCRBY", f"lane:{i}", i), ("ECHO", f"batch {i}"), ("INCRBY", f"lane:{i}", 1)]
            )

        replies = await asyncio.gather(*(batch(i) for i in range(200)))
        assert replies == [[i, f"batch {i}", i + 1] for i in range(200)]


async def test_an_error_reply_takes_its_commands_place(
    redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> None:
    async with lane_on(redis_server, tmp_path) as (_, lane):
        replies = await lane.execute(
            [
                ("SET", "lane:s", "x"),
                ("HGET", "lane:s", "f"),
                ("EVALSHA", "0" * 40, 0),
                ("GET", "lane:s"),
            ]
        )
        assert replies[0] == "OK"
        assert replies[3] == "x"
        assert isinstance(replies[1], ResponseError)
        assert "WRONGTYPE" in str(replies[1])
        assert isinstance(replies[2], NoScriptError)


async def test_the_store_through_a_lane_reloads_flushed_scripts(
    redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> None:
    async with lane_on(redis_server, tmp_path) as (client, lane):
        store = Store(client, make_settings(redis_server.url, tmp_path / "run"), lane=lane)
        await redis.script_flush()
        first, again = await asyncio.gather(
            store.apply(AgentMessage("lane-c1", "agent", "m1", 0)),
            store.apply(AgentMessage("lane-c1", "agent", "m1", 0)),
        )
        assert isinstance(first, TrackResult)
        assert isinstance(again, TrackResult)
        assert (first.status, again.status) == ("started", "duplicate")


async def test_a_restarted_redis_fails_the_batch_in_flight_then_serves_again(
    own_server: RedisServer, tmp_path: Path
) -> None:
    async with lane_on(own_server, tmp_path) as (_, lane):
        assert await lane.execute([("SET", "k", "1")]) == ["OK"]
        waiting = asyncio.ensure_future(lane.execute([("BLPOP", "nothing", 5)]))
        await asyncio.sleep(0.1)
        own_server.kill()
        with pytest.raises(UNAVAILABLE):
            await waiting
        with pytest.raises(UNAVAILABLE):
            await lane.execute([("GET", "k")])  # down: the connection does not open
        own_server.start()
        assert await lane.execute([("SET", "k", "2"), ("GET", "k")]) == ["OK", "2"]


async def test_batches_that_find_redis_down_share_one_attempt_to_connect(
    own_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with lane_on(own_server, tmp_path) as (client, lane):
        attempts = 0
        connection_class = client.connection_pool.connection_class
        connect_once = connection_class.connect

        async def counted(self: Connection) -> None:
            nonlocal attempts
            attempts += 1
            await connect_once(self)  # type: ignore[no-untyped-call]

        monkeypatch.setattr(connection_class, "connect", counted)
        own_server.kill()
        results = await asyncio.gather(
            *(lane.execute([("GET", "k")]) for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, UNAVAILABLE) for r in results), results
        assert attempts == 1


async def test_a_stalled_redis_times_out_and_a_new_connection_serves(
    own_server: RedisServer, tmp_path: Path
) -> None:
    assert own_server.proc is not None
    async with lane_on(own_server, tmp_path) as (_, lane):
        first_id = (await lane.execute([("CLIENT", "ID")]))[0]
        own_server.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError):
                await lane.execute([("SET", "k", "late")])
        finally:
            own_server.proc.send_signal(signal.SIGCONT)
        # the late reply went to the closed connection: the next batch's are its own
        echo, new_id = await lane.execute([("ECHO", "fresh"), ("CLIENT", "ID")])
        assert echo == "fresh"
        assert new_id != first_id


async def test_a_demoted_master_is_left_for_a_new_connection(
    own_server: RedisServer, tmp_path: Path
) -> None:
    """Sentinel's failover turns the master into a replica: writes answer READONLY, and the
    lane drops the connection so that the next one asks for the master again."""
    admin = own_server.client()
    async with lane_on(own_server, tmp_path) as (_, lane):
        first_id = (await lane.execute([("CLIENT", "ID")]))[0]
        admin.replicaof("127.0.0.1", free_port())
        (refused,) = await lane.execute([("SET", "k", "1")])
        assert isinstance(refused, ReadOnlyError)
        admin.replicaof("NO", "ONE")
        await asyncio.sleep(0)  # the reset runs in the turn after the reply
        assert (await lane.execute([("CLIENT", "ID")]))[0] != first_id
        assert await lane.execute([("SET", "k", "1")]) == ["OK"]
    admin.close()


async def test_closing_fails_what_is_in_flight(
    redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> None:
    async with lane_on(redis_server, tmp_path) as (_, lane):
        waiting = asyncio.ensure_future(lane.execute([("BLPOP", "lane:nothing", 5)]))
        await asyncio.sleep(0.1)
        await lane.aclose()
        with pytest.raises(UNAVAILABLE):
            await waiting
