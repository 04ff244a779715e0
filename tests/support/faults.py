"""Helpers of the fault tests: build events, read the shard streams, watch leases and pods."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

import redis as sync_redis

from tests.support.processes import Pod
from tracker.delivery.notification import Notification
from tracker.redis.keys import ShardKeys
from tracker.timefmt import format_ms

#: Short timings every fault test starts from.
FAST = {
    "TIMEOUT_INTERVAL_MS": "1000",
    "LEADER_ELECTION_TTL": "2",
    "DELIVERY_TIMEOUT_MS": "2000",
    "CHECK_INTERVAL_MS": "500",
    "SHARD_COUNT": "8",
}
LEVELS = (1, 2, 3)
# Levels 4 s apart, more than any recovery here takes (a lease takeover, a claim after
# DELIVERY_TIMEOUT_MS). A sweep that finds a level overdue together with the next one fires
# only the next one, on purpose (guarantee 4: catch up with the highest level, no storm),
# so with levels closer than the recovery time "every level arrives" would not be the
# contract. Spaced out, it is.
SPACED = {"LEVEL_MULTIPLIERS": "1,5,9"}


def now_ms() -> int:
    return int(time.time() * 1000)


def agent(conversation_id: str, since_ms: int | None = None, message: str = "m") -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "agent_message",
        "conversation_id": conversation_id,
        "agent_id": "agent-1",
        "message_id": f"{message}-{conversation_id}",
    }
    if since_ms is not None:
        item["timestamp"] = format_ms(since_ms)
    return item


def reply(conversation_id: str, at_ms: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "customer_response",
        "conversation_id": conversation_id,
        "customer_id": "customer-1",
        "message_id": f"r-{conversation_id}",
    }
    if at_ms is not None:
        item["timestamp"] = format_ms(at_ms)
    return item


def every_level(ids: list[str]) -> set[tuple[str, int]]:
    return {(c, level) for c in ids for level in LEVELS}


@dataclass(frozen=True, slots=True)
class Enqueued:
    """One entry the sweep script wrote into a shard stream."""

    conversation_id: str
    level: int
    waiting_since_ms: int
    due_ms: int
    enqueued_ms: int  # the entry id's time: Redis's clock at XADD


def enqueued(client: sync_redis.Redis, shard_count: int) -> list[Enqueued]:
    out = []
    for shard in range(shard_count):
        entries: Any = client.xrange(ShardKeys.of(shard).outbox)
        for entry_id, fields in entries:
            n = Notification.from_entry(shard, entry_id, fields)
            at = int(entry_id.split("-")[0])
            out.append(Enqueued(n.conversation_id, n.level, n.waiting_since_ms, n.due_at_ms, at))
    return out


def fired_total(client: sync_redis.Redis, shards: list[int]) -> int:
    return sum(int(client.hget(ShardKeys.of(s).counters, "total") or 0) for s in shards)


def lease_holders(client: sync_redis.Redis, shard_count: int) -> dict[int, str]:
    """Shard -> pod id of its lease holder (shards without a holder are absent)."""
    out = {}
    for shard in range(shard_count):
        value = client.get(ShardKeys.of(shard).leader)
        if value:
            out[shard] = str(value).split("|")[0]
    return out


def lease_counts(client: sync_redis.Redis, shard_count: int) -> collections.Counter[str]:
    return collections.Counter(lease_holders(client, shard_count).values())


def program_states(pod: Pod) -> dict[str, str]:
    """supervisorctl status as program name -> state (RUNNING, FATAL, ...)."""
    states = {}
    for line in pod.ctl("status").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            states[parts[0]] = parts[1]
    return states


POD_PROGRAMS = ("api:api-0", "sweeper", "consumer:consumer-0", "consumer:consumer-1")


def program_pids(pod: Pod, programs: tuple[str, ...] = POD_PROGRAMS) -> dict[str, int]:
    return {p: pod.pid_of(p) for p in programs}


def where_are(client: sync_redis.Redis, lost: set[tuple[str, int]], shard_count: int) -> str:
    """For a failure message: what Redis holds about the notifications that never arrived."""
    from tracker.redis.keys import CONSUMER_GROUP, shard_of

    streams = {(e.conversation_id, e.level) for e in enqueued(client, shard_count)}
    lines = []
    for c, level in sorted(lost)[:10]:
        k = ShardKeys.of(shard_of(c, shard_count))
        lines.append(
            f"{c} level {level}: shard {k.shard} record={client.hget(k.records, c)!r}"
            f" fired={client.hget(k.fired, c)!r} due={client.zscore(k.waiting, c)!r}"
            f" in_stream={(c, level) in streams}"
        )
    pending: Any = [
        client.xpending(ShardKeys.of(s).outbox, CONSUMER_GROUP)
        for s in range(shard_count)
        if client.exists(ShardKeys.of(s).outbox)
    ]
    return "\n".join([*lines, f"pending per shard: {pending}"])


def pending_of(client: sync_redis.Redis, consumer: str, shards: list[int]) -> int:
    """Entries read by ``consumer`` and not acknowledged yet, over the given shards."""
    from tracker.redis.keys import CONSUMER_GROUP

    total = 0
    for shard in shards:
        stream = ShardKeys.of(shard).outbox
        if not client.exists(stream):
            continue
        try:
            consumers: Any = client.xinfo_consumers(stream, CONSUMER_GROUP)
        except sync_redis.ResponseError:
            continue
        total += sum(int(c["pending"]) for c in consumers if c["name"] == consumer)
    return total


def settled(client: sync_redis.Redis) -> bool:
    """Nothing more can be sent: no conversation waits for a level, and every entry of
    every shard's stream has been read and acknowledged (a receiver has what it will get,
    once each pending entry's acknowledgement follows its delivery)."""
    from tracker.redis.keys import CONSUMER_GROUP

    if any(client.zcard(key) for key in client.scan_iter("waiting_conversations:*")):
        return False
    for stream in client.scan_iter("timeout_events:*"):
        info: Any = client.xinfo_stream(stream)
        groups: Any = client.xinfo_groups(stream)
        group = next((g for g in groups if g["name"] == CONSUMER_GROUP), None)
        if info["length"] and group is None:
            return False
        if group is not None and (
            int(group["pending"]) or group["last-delivered-id"] != info["last-generated-id"]
        ):
            return False
    return True
