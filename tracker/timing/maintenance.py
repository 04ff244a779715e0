"""Housekeeping for the shards a sweeper leads: trim streams, drop idle consumers, gauges."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from redis.exceptions import ResponseError

from tracker import metrics
from tracker.redis.connection import Client
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys
from tracker.redis.scripts import Call, Script, run

log = logging.getLogger(__name__)

#: A consumer with nothing pending and idle this long belongs to a pod that is gone.
IDLE_CONSUMER_MS = 3_600_000

TRIM = Script.load("trim")


def trim_call(shard: int) -> Call[int]:
    """Trim the shard's outbox below what its consumer group still needs: how many went."""
    return Call(TRIM, [ShardKeys.of(shard).outbox], [], int)


async def tidy(redis: Client, shards: Sequence[int]) -> None:
    """Trim the outboxes, drop consumers of pods that are gone, set the shards' gauges."""
    waiting = backlog = pending = dead = 0
    oldest_ms = 0
    now_ms = int(time.time() * 1000)
    for shard in shards:
        k = ShardKeys.of(shard)
        await run(redis, trim_call(shard))
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zcard(k.waiting)
            pipe.xlen(k.dead_letters)
            pipe.xinfo_groups(k.outbox)
            pipe.xpending_range(k.outbox, CONSUMER_GROUP, "-", "+", 1)
            zcard, dlen, groups, first = await pipe.execute(raise_on_error=False)
        waiting += _int(zcard)
        dead += _int(dlen)
        for group in groups if isinstance(groups, list) else []:
            if group["name"] == CONSUMER_GROUP:
                backlog += int(group.get("lag") or 0)
                pending += int(group["pending"])
        if isinstance(first, list) and first:
            oldest_ms = max(oldest_ms, now_ms - int(first[0]["message_id"].split("-")[0]))
        await drop_idle_consumers(redis, k.outbox)
    metrics.WAITING.set(waiting)
    metrics.WAITING_CONVERSATIONS.set(waiting)
    metrics.BACKLOG.set(backlog)
    metrics.PENDING.set(pending)
    metrics.DEAD_LETTERS.set(dead)
    metrics.OLDEST_PENDING.set(oldest_ms / 1000)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


async def drop_idle_consumers(redis: Client, stream: str, idle_ms: int = IDLE_CONSUMER_MS) -> None:
    """Remove consumers of pods that are gone: nothing pending and idle past `idle_ms`."""
    try:
        consumers = await redis.xinfo_consumers(stream, CONSUMER_GROUP)
    except ResponseError:
        return  # no stream or group yet
    for c in consumers:
        if int(c["pending"]) == 0 and int(c["idle"]) > idle_ms:
            await redis.xgroup_delconsumer(stream, CONSUMER_GROUP, c["name"])
            log.info("dropped idle consumer name=%s stream=%s", c["name"], stream)
