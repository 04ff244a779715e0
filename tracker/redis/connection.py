"""The Redis client: one per process, for a standalone server, a Cluster or Sentinel."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    TimeoutError,
    TryAgainError,
)

from tracker.errors import ConfigError
from tracker.redis.replies import BusyError, MisconfError
from tracker.settings import Settings

C = TypeVar("C", bound=AbstractConnection)

#: A client of a standalone server, a Sentinel master or a Cluster: the tracker uses the
#: commands they share; what differs on a Cluster is in tracker/redis/cluster.py.
Client = Redis | RedisCluster

#: Errors that mean "Redis is not reachable right now": 503 at the API, back off in loops.
UNAVAILABLE = (
    ConnectionError,
    TimeoutError,
    BusyLoadingError,
    ClusterDownError,
    TryAgainError,
    OSError,
)

#: Error replies that mean "not now": a full, busy, loading or read-only server, a cluster
#: or a failover in progress, a lost script cache. Like UNAVAILABLE they are backed off and
#: retried by the role loops and answered 503 by the API; any other error reply is a bug.
#: (tracker/redis/replies.py adds BUSY and MISCONF to redis-py's reply classes.)
OUTAGE_CLASSES: dict[type[RedisError], str] = {
    OutOfMemoryError: "oom",
    BusyLoadingError: "loading",
    ReadOnlyError: "readonly",
    MasterDownError: "masterdown",
    ClusterDownError: "clusterdown",
    TryAgainError: "tryagain",
    NoScriptError: "noscript",
    BusyError: "busy",
    MisconfError: "misconf",
}


def error_kind(exc: BaseException) -> str:
    """A short name for a Redis error, for metrics and logs: ``connection``, ``timeout``,
    an outage (``oom``, ``readonly``, ``loading``, ``busy``, ...), or ``other``."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    for cls, kind in OUTAGE_CLASSES.items():
        if isinstance(exc, cls):
            return kind
    if isinstance(exc, ConnectionError | OSError):
        return "connection"
    return "other"


def is_outage(exc: BaseException) -> bool:
    """Redis cannot serve this now, but will (UNAVAILABLE, or an outage reply)."""
    return isinstance(exc, UNAVAILABLE) or error_kind(exc) != "other"


#: Every value `error_kind` gives, for metrics exported at 0 from the start.
ERROR_KINDS = (
    "connection",
    "timeout",
    *OUTAGE_CLASSES.values(),
    "other",
)

_SERIALIZER = HiredisRespSerializer()  # the general case: memoryviews, errors


def pack_command(args: tuple[Any, ...]) -> list[bytes]:
    """One command in RESP, packed by hiredis (C) instead of redis-py's asyncio packer
    (Python): the same bytes for about an eighth of the CPU, which matters for script calls
    with hundreds of arguments. redis-py's sync client does the same when hiredis is
    installed."""
    command = args[0]
    if isinstance(command, str) and " " not in command:
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            pass
    return cast(list[bytes], _SERIALIZER.pack(*args))


class _HiredisPacking:
    """A connection whose commands `pack_command` packs."""

    def pack_command(self, *args: Any) -> list[bytes]:
        return pack_command(args)


_PACKED: dict[type[Any], type[Any]] = {}


def packed(connection_class: type[C]) -> type[C]:
    """`connection_class` with hiredis packing."""
    if connection_class not in _PACKED:
        name = connection_class.__name__
        _PACKED[connection_class] = type(name, (_HiredisPacking, connection_class), {})
    return _PACKED[connection_class]


def tls(settings: Settings) -> dict[str, Any]:
    """REDIS_TLS_CA_FILE, for every TLS connection (settings allow it with rediss:// only)."""
    if settings.redis_tls_ca_file is None:
        return {}
    return {"ssl_ca_certs": str(settings.redis_tls_ca_file)}


def _common(settings: Settings, socket_timeout: float) -> dict[str, Any]:
    return {
        **tls(settings),
        "decode_responses": True,
        # A value that is not UTF-8 (a stream entry some other client wrote) reads as
        # surrogates instead of failing the whole reply, and writes back as the same bytes.
        "encoding_errors": "surrogateescape",
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 2.0,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
        "retry_on_error": [ConnectionError, TimeoutError],
        "client_name": f"tracker:{settings.pod_id}",
    }


def sentinel_hosts(url: str) -> list[tuple[str, int]]:
    """``redis://[user:pass@]h1:26379,h2:26379/0`` -> [(h1, 26379), (h2, 26379)]."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    hosts = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"REDIS_URL: sentinel address {item!r} must be host:port")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


def credentials(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    db = parts.path.strip("/")
    return {
        "username": unquote(user) or None,
        "password": unquote(password) or None,
        "db": int(db) if db.isdigit() else 0,
        "ssl": parts.scheme == "rediss",
    }


def connect(
    settings: Settings, *, socket_timeout: float = 5.0, max_connections: int = 64
) -> Client:
    """A client for REDIS_URL in REDIS_MODE; commands retry briefly on connection errors."""
    common = _common(settings, socket_timeout)
    if settings.redis_mode == "cluster":
        cluster = RedisCluster.from_url(
            settings.redis_url, max_connections=max_connections, **common
        )
        kwargs = cluster.nodes_manager.connection_kwargs  # for the nodes it discovers
        kwargs["connection_class"] = packed(kwargs["connection_class"])
        for node in cluster.nodes_manager.startup_nodes.values():
            node.connection_class = packed(node.connection_class)
        return cluster
    if settings.redis_mode == "sentinel":
        creds = credentials(settings.redis_url)
        ssl = creds.pop("ssl")
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            sentinel_hosts(settings.redis_url),
            sentinel_kwargs={
                "socket_timeout": 2.0,
                "decode_responses": True,
                "ssl": ssl,
                **tls(settings),
            },
            ssl=ssl,
            **common,
        )
        master = sentinel.master_for(
            settings.redis_sentinel_master, max_connections=max_connections, **creds
        )
        pool = master.connection_pool
        pool.connection_class = packed(pool.connection_class)
        return cast(Redis, master)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=socket_timeout,
        health_check_interval=15,
        **common,
    )
    pool.connection_class = packed(pool.connection_class)
    return Redis.from_pool(pool)


async def close(client: Client) -> None:
    """Close `client` and, in sentinel mode, its connections to the sentinels (redis-py's
    `aclose` leaves those open)."""
    await client.aclose()
    pool = getattr(client, "connection_pool", None)  # a RedisCluster has none
    sentinels = getattr(pool, "sentinel_manager", None)
    for sentinel in sentinels.sentinels if sentinels is not None else ():
        await sentinel.aclose()


async def redis_time_ms(client: Client) -> int:
    """Redis's clock (TIME), in milliseconds: the one clock every pod agrees on."""
    return time_ms(await client.time())


def time_ms(reply: tuple[int, int]) -> int:
    """A TIME reply (seconds, microseconds) in milliseconds."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000
