"""Moving conversations to their shard of a new layout, in three idempotent steps: take
them out of the old shard (into its moving_conversations), place them in the new one (a
copy already there is newer and wins), forget them in the old one. A caller that stops
anywhere leaves nothing lost: the next move of the same ids (a writer touching them, or
the reshard command) finishes the job."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from tracker.redis.connection import Client
from tracker.redis.keys import ShardKeys, wake_channel
from tracker.redis.scripts import Call, Script, run_all

if TYPE_CHECKING:
    from tracker.state.layout import Layout

CHUNK = 500  # conversations per script call

TAKE_OUT = Script.load("migrate_out")
PLACE = Script.load("migrate_in")

Taken = dict[int, list[tuple[str, str]]]  # old shard -> (conversation id, payload)


def take_out_call(shard: int, epoch: int, ids: Sequence[str] = ()) -> Call[list[tuple[str, str]]]:
    """Step 1: take `ids` out of `shard` into its moving_conversations; (id, payload) for
    each one held there. Raises the shard's layout epoch to `epoch` (with no ids, that is
    all it does: the layout's fence); raises EpochRefused when the shard has seen a newer
    one."""
    k = ShardKeys.of(shard)
    keys = [k.records, k.waiting, k.fired, k.retired, k.moving, k.epoch, k.history]
    return Call(TAKE_OUT, keys, [epoch, *ids], _pairs)


def _pairs(reply: list[str]) -> list[tuple[str, str]]:
    return [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]


def place_call(shard: int, pairs: Sequence[tuple[str, str]]) -> Call[int]:
    """Step 2: place taken-out conversations in their new `shard` (a copy already there is
    newer and stays); how many were placed."""
    k = ShardKeys.of(shard)
    keys = [k.records, k.waiting, k.fired, k.retired, k.history]
    args = [wake_channel(shard), *(v for pair in pairs for v in pair)]
    return Call(PLACE, keys, args, int)


async def move(redis: Client, layout: Layout, ids: Iterable[str]) -> int:
    """Move the given conversations that still sit in their previous shard; returns how many
    were placed in their new shard. Raises EpochRefused when the layout is out of date."""
    by_source: dict[int, list[str]] = defaultdict(list)
    for c in ids:
        source = layout.source(c)
        if source is not None:
            by_source[source].append(c)
    if not by_source:
        return 0
    taken = await _take_out(redis, layout.epoch, by_source)
    if not taken:
        return 0
    placed = await _place(redis, layout, taken)
    async with redis.pipeline(transaction=False) as pipe:  # step 3
        for source, pairs in taken.items():
            ids_out = [c for c, _ in pairs]
            for i in range(0, len(ids_out), CHUNK):
                pipe.hdel(ShardKeys.of(source).moving, *ids_out[i : i + CHUNK])
        await pipe.execute()
    return placed


async def _take_out(redis: Client, epoch: int, by_source: dict[int, list[str]]) -> Taken:
    calls: list[Call[list[tuple[str, str]]]] = []
    sources: list[int] = []
    for source, members in by_source.items():
        for i in range(0, len(members), CHUNK):
            calls.append(take_out_call(source, epoch, members[i : i + CHUNK]))
            sources.append(source)
    taken: Taken = defaultdict(list)
    for source, pairs in zip(sources, await run_all(redis, calls), strict=True):
        taken[source] += pairs
    return {s: pairs for s, pairs in taken.items() if pairs}


async def _place(redis: Client, layout: Layout, taken: Taken) -> int:
    by_target: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for pairs in taken.values():
        for c, payload in pairs:
            by_target[layout.shard(c)].append((c, payload))
    calls = [
        place_call(target, pairs[i : i + CHUNK])
        for target, pairs in by_target.items()
        for i in range(0, len(pairs), CHUNK)
    ]
    return sum(await run_all(redis, calls))
