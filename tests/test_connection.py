"""The Redis client: commands packed by hiredis, byte for byte as redis-py packs them; error
replies classified by kind."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis._parsers import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError
from redis.typing import EncodableT

from tests.conftest import make_settings
from tests.support.redis_server import RedisServer
from tracker.redis.connection import connect, error_kind, is_outage, packed

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


OUTAGE_REPLIES = {
    "LOADING Redis is loading the dataset in memory": "loading",
    "OOM command not allowed when used memory > 'maxmemory'.": "oom",
    "READONLY You can't write against a read only replica.": "readonly",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.": (
        "masterdown"
    ),
    "CLUSTERDOWN The cluster is down": "clusterdown",
    "TRYAGAIN Multiple keys request during rehashing of slot": "tryagain",
    "NOSCRIPT No matching script. Please use EVAL.": "noscript",
    "BUSY Redis is busy running a script.": "busy",
    "MISCONF Redis is configured to save RDB snapshots, but it's unable to persist.": "misconf",
}


@pytest.mark.parametrize("reply", sorted(OUTAGE_REPLIES))
def test_an_outage_reply_is_backed_off_and_counted_by_its_kind(reply: str) -> None:
    """Guarantee 8: each reply that means "not now" is an outage (backed off by the roles,
    503 at the API) under its own kind; any other error reply is not (a bug: 500)."""
    error = BaseParser.parse_error(reply)  # type: ignore[no-untyped-call]
    assert (error_kind(error), is_outage(error)) == (OUTAGE_REPLIES[reply], True)
    other = BaseParser.parse_error("ERR unknown command 'NOPE'")  # type: ignore[no-untyped-call]
    assert (error_kind(other), is_outage(other)) == ("other", False)
