"""Per-shard leases with fencing tokens, spread evenly over the live sweepers."""

from __future__ import annotations

import logging
import math
import zlib
from typing import cast

from redis.asyncio import Redis, RedisCluster

from tracker import metrics
from tracker.redis.connection import is_cluster, redis_time_ms
from tracker.redis.keys import PODS, ShardKeys
from tracker.redis.scripts import Call, Scripts, run_batch
from tracker.settings import Settings

log = logging.getLogger(__name__)


class Leases:
    """The shard leases this pod holds; ``balance`` renews them and moves toward a fair share."""

    def __init__(self, redis: Redis, settings: Settings, scripts: Scripts) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = scripts
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
        """Which Redis server holds each shard: the cluster node of its slot, or else the
        run id of the one server (it changes when a failover or restart replaces it)."""
        shards = range(self.count)
        if is_cluster(self.redis):
            cluster = cast(RedisCluster, self.redis)
            await cluster.initialize()
            nodes = {s: cluster.get_node_from_key(ShardKeys.of(s).leader) for s in shards}
            return {s: node.name if node else "none" for s, node in nodes.items()}
        info = await self.redis.info("server")
        return dict.fromkeys(shards, str(info["run_id"]))

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
        renew = self.scripts.lease_renew
        calls: list[Call] = [(renew, [ShardKeys.of(s).leader], [self.held[s], ttl]) for s in shards]
        results = await run_batch(self.redis, calls)
        lost = [s for s, ok in zip(shards, results, strict=True) if not int(ok)]
        for shard in lost:
            del self.held[shard]
        return lost

    async def _acquire(self, shard: int) -> bool:
        k = ShardKeys.of(shard)
        taken, value = await self.scripts.lease_acquire.run(
            self.redis, k.for_lease, [self.settings.pod_id, self.settings.leader_ttl_ms]
        )
        if int(taken):
            self.held[shard] = str(value)
        return bool(int(taken))

    def drop(self, shard: int) -> None:
        """Forget a shard whose script said FENCED: another holder has it."""
        if self.held.pop(shard, None) is not None:
            metrics.LEADER_CHANGES.labels("lost").inc()
            self.gauge.set(len(self.held))

    async def release(self, shard: int) -> None:
        value = self.held.pop(shard, None)
        if value is not None:
            await self.scripts.lease_release.run(self.redis, [ShardKeys.of(shard).leader], [value])

    async def release_all(self) -> None:
        for shard in list(self.held):
            await self.release(shard)
        await self.redis.zrem(PODS, self.settings.pod_id)
        self.gauge.set(0)
