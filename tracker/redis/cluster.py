"""What differs on a Redis Cluster, in one place. Everywhere else a client is a `Client`
and uses the commands a standalone server and a cluster share; every script call and
pipeline keeps to one shard's slot (its keys carry the hash tag ``{N}``). The API's lane
keeps a connection to each master itself (tracker/redis/lane.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis, RedisCluster

from tracker.redis.connection import Client, credentials, tls
from tracker.settings import Settings


def is_cluster(client: Client) -> bool:
    return isinstance(client, RedisCluster)


async def read_group(
    client: Client,
    group: str,
    consumer: str,
    streams: dict[str, str],
    count: int,
    block_ms: int | None,
) -> Any:
    """XREADGROUP. On a cluster (one stream a call), sent to the node that serves the
    stream: redis-py would otherwise ask a fixed node for the command's keys (COMMAND
    GETKEYS) and keep asking it after that node failed."""
    if not isinstance(client, RedisCluster):
        return await client.xreadgroup(group, consumer, streams, count=count, block=block_ms)  # type: ignore[arg-type]
    await client.initialize()  # a no-op unless a failure asked for a topology refresh
    ((key, start),) = streams.items()
    args: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
    if block_ms is not None:
        args += ["BLOCK", block_ms]
    args += ["STREAMS", key, start]
    return await client.execute_command(*args, target_nodes=client.get_node_from_key(key))


async def servers(client: Client, keys: dict[int, str]) -> dict[int, str]:
    """Which server holds each shard (by one of its keys): the cluster node of its slot, or
    else the run id of the one server (it changes when a failover or restart replaces it)."""
    if isinstance(client, RedisCluster):
        await client.initialize()
        nodes = {s: client.get_node_from_key(key) for s, key in keys.items()}
        return {s: node.name if node else "none" for s, node in nodes.items()}
    info = await client.info("server")
    return dict.fromkeys(keys, str(info["run_id"]))


async def server_infos(client: Client) -> Iterable[tuple[str | None, dict[str, Any]]]:
    """INFO of every server: each master of a cluster by its name, or the one server."""
    if not isinstance(client, RedisCluster):
        return [(None, await client.info())]
    replies = await client.info(target_nodes=RedisCluster.PRIMARIES)
    if all(isinstance(v, dict) for v in replies.values()):
        return sorted(replies.items())
    return [(None, replies)]  # a cluster of one master answers as a server does


async def pubsub_client(settings: Settings, client: Client) -> Redis:
    """A client to subscribe with. Redis Cluster broadcasts PUBLISH to every node, so a
    plain connection to any one node hears every shard's messages."""
    if not isinstance(client, RedisCluster):
        return client
    await client.initialize()
    node = client.get_random_node()
    creds = credentials(settings.redis_url)
    return Redis(
        host=node.host,
        port=int(node.port),
        username=creds["username"],
        password=creds["password"],
        ssl=creds["ssl"],
        decode_responses=True,
        socket_connect_timeout=2.0,
        **tls(settings),
    )
