"""Operator commands: status, dead letters (list, replay, purge), one conversation, reshard."""

from __future__ import annotations

from typing import Any, cast

import orjson
from redis.asyncio import Redis

from tracker.api import conversation_json
from tracker.connection import redis_time_ms
from tracker.events import Entries, Notification
from tracker.keys import CONSUMER_GROUP, PODS, ShardKeys, all_shards
from tracker.layout import read_layout
from tracker.scripts import Scripts
from tracker.settings import Settings
from tracker.store import Store

HISTORY_SCAN = 10_000


async def _xrange(redis: Redis, key: str, count: int | None = None) -> Entries:
    return cast(Entries, await redis.xrange(key, count=count))


async def _xrevrange(redis: Redis, key: str, count: int) -> Entries:
    return cast(Entries, await redis.xrevrange(key, count=count))


async def _shards(redis: Redis, settings: Settings) -> list[ShardKeys]:
    """Every shard that may hold data (both layouts' while a reshard runs)."""
    return all_shards((await read_layout(redis, settings.shard_count)).span)


def _print(data: Any) -> None:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


async def shard_status(redis: Redis, k: ShardKeys, now: int) -> dict[str, Any]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(k.leader)
        pipe.pttl(k.leader)
        pipe.zcard(k.waiting)
        pipe.zrange(k.waiting, 0, 0, withscores=True)
        pipe.xinfo_groups(k.events)
        pipe.xlen(k.dead_letters)
        leader, ttl, waiting, head, groups, dead = await pipe.execute(raise_on_error=False)
    groups_list = groups if isinstance(groups, list) else []
    group: dict[str, Any] = next((g for g in groups_list if g["name"] == CONSUMER_GROUP), {})
    overdue = max(0, now - int(head[0][1])) if head else 0
    return {
        "shard": k.shard,
        "leader": leader,
        "lease_ttl_ms": ttl if leader else None,
        "waiting": waiting,
        "oldest_overdue_ms": overdue,
        "backlog": group.get("lag"),
        "pending": group.get("pending", 0),
        "dead_letters": dead,
    }


async def status(redis: Redis, settings: Settings) -> int:
    now = await redis_time_ms(redis)
    layout = await read_layout(redis, settings.shard_count)
    shards = [await shard_status(redis, k, now) for k in all_shards(layout.span)]
    pods = cast(list[str], await redis.zrangebyscore(PODS, now, "+inf"))
    columns = (
        "shard",
        "leader",
        "waiting",
        "oldest_overdue_ms",
        "backlog",
        "pending",
        "dead_letters",
    )
    widths = (5, 24, 8, 17, 8, 8, 12)
    moving = "" if layout.previous is None else f", resharding from {layout.previous}"
    lines = [f"shards: {layout.count}{moving} (layout epoch {layout.epoch})"]
    lines.append(f"pods alive: {', '.join(pods) or 'none'}")
    lines.append(" ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for s in shards:
        cells = ("-" if s[c] is None else str(s[c]) for c in columns)
        lines.append(" ".join(f"{v:>{w}}" for v, w in zip(cells, widths, strict=True)))
    unled = [s["shard"] for s in shards if not s["leader"]]
    lines.append(f"shards without a leader: {unled or 'none'}")
    print("\n".join(lines))
    return 0


async def dead_letters_list(redis: Redis, settings: Settings, limit: int) -> int:
    for k in await _shards(redis, settings):
        for entry_id, fields in await _xrange(redis, k.dead_letters, limit):
            print(orjson.dumps({"shard": k.shard, "id": entry_id, **fields}).decode())
    return 0


async def dead_letters_replay(redis: Redis, settings: Settings, ids: list[str]) -> int:
    """Put dead letters back on their shard stream (all of them, or the given ids)."""
    replayed = 0
    for k in await _shards(redis, settings):
        for entry_id, fields in await _xrange(redis, k.dead_letters):
            if ids and entry_id not in ids:
                continue
            async with redis.pipeline(transaction=True) as tx:
                entry = Notification.from_entry(k.shard, entry_id, fields).entry_fields()
                tx.xadd(k.events, cast(Any, entry))
                tx.xdel(k.dead_letters, entry_id)
                await tx.execute()
            replayed += 1
    print(f"replayed {replayed}")
    return 0


async def dead_letters_purge(redis: Redis, settings: Settings, ids: list[str]) -> int:
    purged = 0
    for k in await _shards(redis, settings):
        if ids:
            purged += int(await redis.xdel(k.dead_letters, *ids))
        else:
            purged += int(await redis.xlen(k.dead_letters))
            await redis.delete(k.dead_letters)
    print(f"purged {purged}")
    return 0


async def conversation(redis: Redis, settings: Settings, conversation_id: str) -> int:
    """One conversation's state, each level's fate, and its history."""
    store = Store(redis, settings, Scripts())
    view = await store.get(conversation_id)
    shard = (await store.layout.get()).shard(conversation_id)
    _print(
        {
            "shard": shard,
            "conversation": conversation_json(view, store.levels(view)) if view else None,
            "history": store.timeline(view) if view else [],
        }
    )
    return 0 if view else 1


async def reshard(redis: Redis, settings: Settings, to: int, drain_timeout_s: float) -> int:
    from tracker.reshard import Resharder

    return await Resharder(redis, settings, drain_timeout_s=drain_timeout_s).run(to)
