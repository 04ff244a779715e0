"""The Redis client: commands packed by hiredis, byte for byte as redis-py packs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError
from redis.typing import EncodableT

from tests.conftest import make_settings
from tests.support.redis_server import RedisServer
from tracker.redis.connection import connect, packed

COMMANDS = [
    ("SET", "key", "value"),
    ("EVALSHA", "a" * 40, 2, "k{1}", "k2{1}", 0, 1.5, -2, 10**15, "x|y|z"),
    ("XADD", "stream", "*", "e", "conversation-é|1|2"),
    ("HSET", b"bytes-key", b"\x00\xff", "text"),
    ("CLIENT SETNAME", "tracker:pod"),  # a command name of two words
    ("SET", "view", memoryview(b"from a buffer")),
]


@pytest.mark.parametrize("args", COMMANDS, ids=[str(c[0]) for c in COMMANDS])
def test_packed_bytes_are_redis_pys(args: tuple[EncodableT, ...]) -> None:
    plain, fast = Connection(), packed(Connection)()
    assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))


def test_a_value_redis_py_refuses_is_refused_the_same_way() -> None:
    with pytest.raises(DataError):
        packed(Connection)().pack_command("SET", "key", None)  # type: ignore[arg-type]


async def test_the_client_packs_with_hiredis_and_works(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    client = connect(make_settings(redis_server.url, tmp_path / "run"))
    try:
        assert isinstance(client, Redis)
        cls = client.connection_pool.connection_class
        assert issubclass(cls, Connection | UnixDomainSocketConnection)
        assert cls.pack_command is packed(Connection).pack_command
        await client.hset("packed:h", mapping={"é": 1.5, "n": 10**15})
        assert await client.hgetall("packed:h") == {"é": "1.5", "n": str(10**15)}
    finally:
        await client.delete("packed:h")
        await client.aclose()
