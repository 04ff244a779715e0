"""Per-shard leases with fencing tokens, spread evenly over the live sweepers."""

from __future__ import annotations

import logging
import math
import zlib

from tracker import metrics
from tracker.redis import cluster
from tracker.redis.connection import Client, redis_time_ms
from tracker.redis.keys import PODS, ShardKeys
from tracker.redis.scripts import Call, Script, run, run_all
from tracker.settings import Settings

log = logging.getLogger(__name__)

ACQUIRE = Script.load("lease_acquire")
RENEW = Script.load("lease_renew")
RELEASE = Script.load("lease_release")


def acquire_call(shard: int, pod_id: str, ttl_ms: int) -> Call[str | None]:
    """Take the shard's lease if free (or this pod's): its value ``pod|token``, else None."""
    k = ShardKeys.of(shard)
    return Call(ACQUIRE, [k.leader, k.fence], [pod_id, ttl_ms], _taken)


def _taken(reply: list[int | str]) -> str | None:
    taken, value = reply
    return str(value) if int(taken) else None


def renew_call(shard: int, value: str, ttl_ms: int) -> Call[bool]:
    """Extend the lease `value` for `ttl_ms`: False when it is no longer ours."""
    return Call(RENEW, [ShardKeys.of(shard).leader], [value, ttl_ms], _flag)


def release_call(shard: int, value: str) -> Call[bool]:
    """Give the lease `value` up: False when it was not ours any more."""
    return Call(RELEASE, [ShardKeys.of(shard).leader], [value], _flag)


def _flag(reply: int) -> bool:
    return bool(int(reply))


class Leases:
    """The shard leases this pod holds; ``balance`` renews them and moves toward a fair share."""

    def __init__(self, redis: Client, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.held: dict[int, str] = {}
        self.gauge = metrics.LEASES_HELD.labels(settings.pod_id)
        self.count = 0
        self.preference: list[int] = []
        self.resize(settings.shard_count)

    def resize(self, count: int) -> None:
        """Lead among `count` shards (the layout's span); a shard beyond it is released by
        the next ``balance``. Each pod prefers its own rotation, so pods start apart."""
        if count == self.count:
            return
        offset = zlib.crc32(self.settings.pod_id.encode()) % count
        self.count = count
        self.preference = [(offset + i) % count for i in range(count)]

    async def live_pods(self) -> int:
        """Register this pod as alive for one TTL, and count the pods alive now."""
        now = await redis_time_ms(self.redis)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(PODS, {self.settings.pod_id: now + self.settings.leader_ttl_ms})
            pipe.zremrangebyscore(PODS, "-inf", now)
            pipe.zcard(PODS)
            *_, count = await pipe.execute()
        return max(1, int(count))

    async def servers(self) -> dict[int, str]:
        """Which Redis server holds each shard (tracker/redis/cluster.py)."""
        return await cluster.servers(
            self.redis, {s: ShardKeys.of(s).leader for s in range(self.count)}
        )

    async def balance(self) -> tuple[list[int], list[int]]:
        """Renew, then take or give up shards toward the shard count / live pods.

        Returns (gained, lost) shard numbers.
        """
        lost = await self._renew()
        for shard in [s for s in self.held if s >= self.count]:  # a reshard removed it
            await self.release(shard)
            lost.append(shard)
        target = math.ceil(self.count / await self.live_pods())
        gained: list[int] = []
        if len(self.held) > target:
            for shard in sorted(self.held, key=self.preference.index, reverse=True)[
                : len(self.held) - target
            ]:
                await self.release(shard)
                lost.append(shard)
        else:
            for shard in self.preference:
                if len(self.held) >= target:
                    break
                if shard not in self.held and await self._acquire(shard):
                    gained.append(shard)
        if gained:
            metrics.LEADER_CHANGES.labels("gained").inc(len(gained))
            log.info("leases gained shards=%s pod=%s", gained, self.settings.pod_id)
        if lost:
            metrics.LEADER_CHANGES.labels("lost").inc(len(lost))
            log.info("leases lost shards=%s pod=%s", lost, self.settings.pod_id)
        self.gauge.set(len(self.held))
        return gained, lost

    async def _renew(self) -> list[int]:
        shards = sorted(self.held)
        if not shards:
            return []
        ttl = self.settings.leader_ttl_ms
        renewed = await run_all(self.redis, [renew_call(s, self.held[s], ttl) for s in shards])
        lost = [s for s, ok in zip(shards, renewed, strict=True) if not ok]
        for shard in lost:
            del self.held[shard]
        return lost

    async def _acquire(self, shard: int) -> bool:
        s = self.settings
        value = await run(self.redis, acquire_call(shard, s.pod_id, s.leader_ttl_ms))
        if value is not None:
            self.held[shard] = value
        return value is not None

    def drop(self, shard: int) -> None:
        """Forget a shard whose script said FENCED: another holder has it."""
        if self.held.pop(shard, None) is not None:
            metrics.LEADER_CHANGES.labels("lost").inc()
            self.gauge.set(len(self.held))

    async def release(self, shard: int) -> None:
        value = self.held.pop(shard, None)
        if value is not None:
            await run(self.redis, release_call(shard, value))

    async def release_all(self) -> None:
        for shard in list(self.held):
            await self.release(shard)
        await self.redis.zrem(PODS, self.settings.pod_id)
        self.gauge.set(0)
