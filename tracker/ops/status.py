"""The whole tracker at a glance: shards (leaders, waiting, backlog, pending, dead letters,
write fences), Redis's own condition, this pod's role processes, and what is wrong.

`healthy` is false when any `problems` is listed: a shard without a leader, overdue work
(waiting, unread or pending), dead letters waiting, a shard refusing writes, a Redis that is
loading, read-only, nearly full or failing to persist, a role process backing off or silent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

from tracker.delivery.notification import Notification
from tracker.ops.text import duration
from tracker.pod import heartbeat
from tracker.redis import cluster
from tracker.redis.connection import Client, redis_time_ms
from tracker.redis.keys import CONSUMER_GROUP, PODS, ShardKeys
from tracker.settings import Settings
from tracker.state.layout import Layout, read_layout
from tracker.timefmt import format_ms
from tracker.timing import progress

MEMORY_WARN = 0.9  # of maxmemory
ROLE_SILENT_MS = 10_000  # a role file not rewritten for this long (or 3 sweep intervals)
CHUNK = 256  # shards per pipelined round trip


def overdue_limit_ms(settings: Settings) -> int:
    """Work this late is overdue: the progress watchdog's window, at least 5 s (the
    on-time guarantee's bound)."""
    return max(progress.watchdog_ms(settings), 5000)


@dataclass(frozen=True, slots=True)
class ShardStatus:
    shard: int
    leader: str | None  # pod id of the lease holder
    lease_ttl_ms: int | None
    waiting: int
    oldest_overdue_ms: int  # how late the earliest waiting deadline is (0: not yet due)
    backlog: int | None  # entries no consumer has read (None: Redis too old to say)
    backlog_overdue_ms: int  # how late the oldest unread entry is
    pending: int  # read, not acknowledged (held until due, being delivered or retried)
    pending_overdue_ms: int  # how late the oldest pending entry is
    dead_letters: int
    epoch: int  # the layout epoch this shard's write scripts accept
    refuses_writes: bool  # its epoch is above the layout's: writers are refused


async def report(redis: Client, settings: Settings) -> dict[str, Any]:
    now = await redis_time_ms(redis)
    layout = await read_layout(redis, settings.shard_count)
    shards: list[ShardStatus] = []
    numbers = list(layout.shards())
    for i in range(0, len(numbers), CHUNK):
        shards += await _shards(redis, layout, numbers[i : i + CHUNK], now)
    pods = cast(list[str], await redis.zrangebyscore(PODS, now, "+inf"))
    nodes = await redis_nodes(redis)
    silent_ms = max(ROLE_SILENT_MS, 3 * settings.check_interval_ms)
    local_now = int(time.time() * 1000)  # the role files are written by this host's clock
    roles = [_role(r, local_now, silent_ms) for r in heartbeat.read_all(settings)]
    problems = [
        *_shard_problems(shards, overdue_limit_ms(settings)),
        *_redis_problems(nodes),
        *_role_problems(roles),
    ]
    return {
        "at": format_ms(now),
        "healthy": not problems,
        "problems": problems,
        "overdue_limit_ms": overdue_limit_ms(settings),
        "layout": {"count": layout.count, "previous": layout.previous, "epoch": layout.epoch},
        "pods": pods,
        "totals": {
            name: sum(getattr(s, name) or 0 for s in shards)
            for name in ("waiting", "backlog", "pending", "dead_letters")
        },
        "shards": [asdict(s) for s in shards],
        "redis": nodes,
        "roles": roles,
    }


def exit_code(status: dict[str, Any]) -> int:
    """0 healthy, 1 degraded (Redis unreachable is 2, decided by the caller)."""
    return 0 if status["healthy"] else 1


async def _shards(
    redis: Client, layout: Layout, numbers: Sequence[int], now: int
) -> list[ShardStatus]:
    async with redis.pipeline(transaction=False) as pipe:
        for n in numbers:
            k = ShardKeys.of(n)
            pipe.get(k.leader)
            pipe.pttl(k.leader)
            pipe.zcard(k.waiting)
            pipe.zrange(k.waiting, 0, 0, withscores=True)
            pipe.xinfo_groups(k.outbox)
            pipe.xpending(k.outbox, CONSUMER_GROUP)
            pipe.xlen(k.dead_letters)
            pipe.get(k.epoch)
        replies = await pipe.execute(raise_on_error=False)
    rows = [replies[i * 8 : i * 8 + 8] for i in range(len(numbers))]
    groups = [_group(row[4]) for row in rows]
    pendings = [row[5] if isinstance(row[5], dict) else {} for row in rows]
    # The oldest unread and the oldest pending entry of each shard, for how late they are.
    async with redis.pipeline(transaction=False) as pipe:
        for n, group, pending in zip(numbers, groups, pendings, strict=True):
            events = ShardKeys.of(n).outbox
            pipe.xrange(events, "(" + str(group.get("last-delivered-id") or "0-0"), "+", count=1)
            oldest = pending.get("min") or "0-0"
            pipe.xrange(events, oldest, oldest, count=1)
        heads = await pipe.execute(raise_on_error=False)
    out: list[ShardStatus] = []
    for i, (n, row) in enumerate(zip(numbers, rows, strict=True)):
        leader, ttl, waiting, head, _, _, dead, epoch = row
        unread_head, pending_head = heads[2 * i], heads[2 * i + 1]
        pending_count = int(pendings[i].get("pending") or 0)
        lag = groups[i].get("lag")
        shard_epoch = int(epoch) if isinstance(epoch, str) and epoch.isdigit() else 0
        out.append(
            ShardStatus(
                shard=n,
                leader=leader.split("|", 1)[0] if isinstance(leader, str) else None,
                lease_ttl_ms=int(ttl) if isinstance(leader, str) else None,
                waiting=int(waiting) if isinstance(waiting, int) else 0,
                oldest_overdue_ms=max(0, now - int(head[0][1])) if head else 0,
                backlog=int(lag) if lag is not None else None,
                backlog_overdue_ms=_late(n, unread_head, now) if groups[i] else 0,
                pending=pending_count,
                pending_overdue_ms=_late(n, pending_head, now) if pending_count else 0,
                dead_letters=int(dead) if isinstance(dead, int) else 0,
                epoch=shard_epoch,
                refuses_writes=shard_epoch > layout.epoch,
            )
        )
    return out


def _group(reply: Any) -> dict[str, Any]:
    groups = reply if isinstance(reply, list) else []  # no stream yet: an error reply
    return next((g for g in groups if g["name"] == CONSUMER_GROUP), {})


def _late(shard: int, entries: Any, now: int) -> int:
    """How far past its due time the one entry in `entries` is (0 when none or not due)."""
    if not isinstance(entries, list) or not entries:
        return 0
    entry_id, fields = entries[0]
    try:
        return max(0, now - Notification.from_entry(shard, entry_id, fields).due_at_ms)
    except (KeyError, ValueError):
        return 0


async def redis_nodes(redis: Client) -> list[dict[str, Any]]:
    """Redis's own condition, from INFO: one entry per server (every master of a cluster)."""
    return [_node(name, info) for name, info in await cluster.server_infos(redis)]


def _node(name: str | None, info: dict[str, Any]) -> dict[str, Any]:
    used = int(info.get("used_memory", 0))
    limit = int(info.get("maxmemory", 0))
    role = str(info.get("role", "master"))
    return {
        "node": name,
        "version": info.get("redis_version"),
        "role": role,
        "read_only": role != "master",
        "loading": bool(int(info.get("loading", 0))),
        "used_memory": used,
        "maxmemory": limit,
        "memory_used_ratio": round(used / limit, 3) if limit else None,
        "maxmemory_policy": info.get("maxmemory_policy"),
        "last_save_ok": info.get("rdb_last_bgsave_status", "ok") == "ok"
        and info.get("aof_last_write_status", "ok") == "ok",
        "connected_clients": info.get("connected_clients"),
    }


def _role(state: heartbeat.RoleState, now: int, silent_ms: int) -> dict[str, Any]:
    """A role process's state: its loop stuck (silent) when its file is not rewritten."""
    if not _alive(state.pid):
        condition = "exited"
    elif state.error_kind is not None:
        condition = "backing_off"
    elif now - state.written_ms > silent_ms:
        condition = "silent"
    else:
        condition = "ok"
    return {
        "name": state.name,
        "pid": state.pid,
        "state": condition,
        "progress_age_ms": max(0, now - state.progress_ms) if state.progress_ms else None,
        "error_kind": state.error_kind,
        "error": state.error,
        "error_for_ms": max(0, now - state.error_since_ms) if state.error_since_ms else None,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _shard_problems(shards: Sequence[ShardStatus], limit_ms: int) -> list[str]:
    problems: list[str] = []
    unled = [s.shard for s in shards if s.leader is None]
    if unled:
        problems.append(f"shards without a leader: {_numbers(unled)}")
    for s in shards:
        for what, late in (
            ("earliest waiting deadline", s.oldest_overdue_ms),
            ("oldest unread notification", s.backlog_overdue_ms),
            ("oldest pending notification", s.pending_overdue_ms),
        ):
            if late > limit_ms:
                problems.append(f"shard {s.shard}: {what} is {duration(late)} overdue")
        if s.refuses_writes:
            problems.append(
                f"shard {s.shard} refuses writes: its epoch {s.epoch} is above the layout's"
            )
    dead = sum(s.dead_letters for s in shards)
    if dead:
        problems.append(f"{dead} dead letters waiting (tracker dead-letters list)")
    return problems


def _redis_problems(nodes: Sequence[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    for node in nodes:
        name = f"redis {node['node']}" if node["node"] else "redis"
        if node["loading"]:
            problems.append(f"{name}: loading its data")
        if node["read_only"]:
            problems.append(f"{name}: is a {node['role']} (read-only)")
        ratio = node["memory_used_ratio"]
        if ratio is not None and ratio >= MEMORY_WARN:
            problems.append(f"{name}: memory at {ratio:.0%} of maxmemory")
        if node["maxmemory"] and node["maxmemory_policy"] != "noeviction":
            problems.append(f"{name}: maxmemory-policy {node['maxmemory_policy']} may evict data")
        if not node["last_save_ok"]:
            problems.append(f"{name}: its last save failed (writes may be refused: MISCONF)")
    return problems


def _role_problems(roles: Sequence[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    for role in roles:
        if role["state"] == "backing_off":
            seconds = (role["error_for_ms"] or 0) / 1000
            problems.append(
                f"role {role['name']}: backing off from {role['error_kind']} for {seconds:.0f} s"
            )
        elif role["state"] != "ok":
            problems.append(f"role {role['name']}: {role['state']} (pid {role['pid']})")
    return problems


def _numbers(values: Sequence[int]) -> str:
    """1, 2, 3, 7 -> '1-3, 7'."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
