"""Moving conversations to their shard of a new layout, in three idempotent steps: take
them out of the old shard (into its moving_conversations), place them in the new one (a
copy already there is newer and wins), forget them in the old one. A caller that stops
anywhere leaves nothing lost: the next move of the same ids (a writer touching them, or
the reshard command) finishes the job."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from redis.asyncio import Redis

from tracker.redis.keys import ShardKeys, wake_channel
from tracker.redis.scripts import Call, Scripts, run_batch
from tracker.timing.layout import Layout

CHUNK = 500  # conversations per script call

Taken = dict[int, list[tuple[str, str]]]  # old shard -> (conversation id, payload)


async def move(redis: Redis, scripts: Scripts, layout: Layout, ids: Iterable[str]) -> int:
    """Move the given conversations that still sit in their previous shard; returns how many
    were placed in their new shard. Raises the EPOCH error when the layout is out of date."""
    by_source: dict[int, list[str]] = defaultdict(list)
    for c in ids:
        source = layout.source(c)
        if source is not None:
            by_source[source].append(c)
    if not by_source:
        return 0
    taken = await _take_out(redis, scripts, layout.epoch, by_source)
    if not taken:
        return 0
    placed = await _place(redis, scripts, layout, taken)
    async with redis.pipeline(transaction=False) as pipe:
        for source, pairs in taken.items():
            ids_out = [c for c, _ in pairs]
            for i in range(0, len(ids_out), CHUNK):
                pipe.hdel(ShardKeys.of(source).moving, *ids_out[i : i + CHUNK])
        await pipe.execute()
    return placed


async def _take_out(
    redis: Redis, scripts: Scripts, epoch: int, by_source: dict[int, list[str]]
) -> Taken:
    calls: list[Call] = []
    sources: list[int] = []
    for source, members in by_source.items():
        k = ShardKeys.of(source)
        keys = k.for_take_out
        for i in range(0, len(members), CHUNK):
            calls.append((scripts.migrate_out, keys, [epoch, *members[i : i + CHUNK]]))
            sources.append(source)
    taken: Taken = defaultdict(list)
    for source, reply in zip(sources, await run_batch(redis, calls), strict=True):
        taken[source] += [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]
    return {s: pairs for s, pairs in taken.items() if pairs}


async def _place(redis: Redis, scripts: Scripts, layout: Layout, taken: Taken) -> int:
    by_target: dict[int, list[str]] = defaultdict(list)
    for pairs in taken.values():
        for c, payload in pairs:
            by_target[layout.shard(c)] += [c, payload]
    calls: list[Call] = []
    for target, flat in by_target.items():
        k = ShardKeys.of(target)
        keys = k.for_place
        for i in range(0, len(flat), 2 * CHUNK):
            calls.append(
                (scripts.migrate_in, keys, [wake_channel(target), *flat[i : i + 2 * CHUNK]])
            )
    return sum(int(n) for n in await run_batch(redis, calls))
