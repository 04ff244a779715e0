"""Each Lua script called directly, against the session's real redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from tracker.delivery import ledger
from tracker.delivery.ledger import Outcome, ack_call, attempt_failed_call, dead_letter_call
from tracker.delivery.notification import Notification
from tracker.model import AgentMessage, CustomerResponse, Event, RespondResult, TrackResult
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys, wake_channel
from tracker.redis.replies import FencedError
from tracker.redis.scripts import run
from tracker.settings import Settings
from tracker.state.store import apply_call
from tracker.timefmt import format_ms
from tracker.timing.lease import acquire_call, release_call, renew_call
from tracker.timing.maintenance import trim_call
from tracker.timing.sweeper import sweep_call

K = ShardKeys.of(3)
T = 1000  # the interval of these tests, ms
MULTIPLIERS = (1, 2, 3)
RETENTION = 60_000
EPOCH = 0  # the shard layout epoch the writes route by
POD = "pod-a"
TTL = 10_000
CONSUMER = "consumer-1"


def policy(retention: int = RETENTION, prefetch: int = 0) -> Settings:
    """The settings the scripts read: interval T, multipliers 1, 2, 3, `retention`."""
    env = {"REDIS_URL": "redis://127.0.0.1:1", "RUN_DIR": "var/unused"}
    base = Settings.from_env(env | {"TIMEOUT_INTERVAL_MS": str(T), "LEVEL_MULTIPLIERS": "1,2,3"})
    return dataclasses.replace(
        base,
        answered_retention_ms=retention,
        history_retention_ms=retention,
        prefetch_ms=prefetch,
    )


# --- helpers -------------------------------------------------------------------------------


async def redis_now(r: Redis) -> int:
    seconds, micros = await r.time()
    return seconds * 1000 + micros // 1000


async def apply(r: Redis, *events: Event, retention: int = RETENTION) -> list[Any]:
    """The apply script on shard K for `events`, in order, as the script's flat reply:
    status, generation, waiting since, next due (-1 none) for an agent message; status,
    generation, response time (-1 none), 0 for a customer response."""
    flat: list[Any] = []
    for result in await run(r, apply_call(K.shard, EPOCH, events, policy(retention))):
        if isinstance(result, TrackResult):
            due = result.next_due_ms
            flat += [result.status, result.generation, result.waiting_since_ms, due or -1]
        else:
            assert isinstance(result, RespondResult)
            response = result.response_time_ms
            flat += [result.status, result.generation, -1 if response is None else response, 0]
    return flat


async def track(
    r: Redis,
    cid: str,
    message_id: str,
    ts: int = 0,
    *,
    agent: str = "agent-1",
    interval: int = T,
) -> list[Any]:
    """An agent message: status, generation, waiting since, next due."""
    return await apply(r, AgentMessage(cid, agent, message_id, ts, interval))


async def respond(
    r: Redis, cid: str, message_id: str, ts: int = 0, *, retention: int = RETENTION
) -> list[Any]:
    """A customer response: status, response time (-1: none), generation."""
    status, gen, response, _ = await apply(
        r, CustomerResponse(cid, "customer-1", message_id, ts), retention=retention
    )
    return [status, response, gen]


async def acquire(r: Redis, pod: str = POD, ttl: int = TTL) -> str | None:
    return await run(r, acquire_call(K.shard, pod, ttl))


async def lease(r: Redis, pod: str = POD) -> str:
    value = await acquire(r, pod)
    assert value is not None
    return value


async def sweep(
    r: Redis, lease_value: str, *, batch: int = 100, retention: int = RETENTION, prefetch: int = 0
) -> list[int]:
    """fired, next due (-1 none), Redis's clock, more (0|1)."""
    call = sweep_call(K.shard, lease_value, policy(retention, prefetch), batch)
    swept = await run(r, call)
    next_due = int(swept.next_due_ms) if swept.next_due_ms != float("inf") else -1
    return [swept.fired, next_due, swept.now_ms, int(swept.more)]


async def record(r: Redis, cid: str) -> list[str] | None:
    raw = await r.hget(K.records, cid)
    return None if raw is None else str(raw).split("|")


def entries(raw: Any) -> list[tuple[str, dict[str, str]]]:
    """Stream entries as (id, fields) with str types (redis-py types them bytes | str)."""
    return [(str(entry_id), dict(fields)) for entry_id, fields in raw or []]


async def xrange(r: Redis, key: str = K.outbox) -> list[tuple[str, dict[str, str]]]:
    return entries(await r.xrange(key))


async def events(r: Redis) -> list[dict[str, str]]:
    """The shard stream's entries, one field per value."""
    return [Notification.from_entry(0, i, f).readable_fields() for i, f in await xrange(r)]


async def fired_level(r: Redis, cid: str) -> int | None:
    level = await r.hget(K.fired, cid)
    return None if level is None else int(level)


async def snapshot(r: Redis, cid: str) -> tuple[Any, ...]:
    """Everything the apply script may write for one conversation."""
    return (
        await r.hget(K.records, cid),
        await r.zscore(K.waiting, cid),
        await r.hget(K.fired, cid),
        await r.zscore(K.retired, cid),
        await r.hget(K.history, cid),
    )


async def read_group(r: Redis) -> list[tuple[str, dict[str, str]]]:
    """Create the delivery group if needed and read every new entry as one consumer."""
    groups = await r.xinfo_groups(K.outbox) if await r.exists(K.outbox) else []
    if not groups:
        await r.xgroup_create(K.outbox, CONSUMER_GROUP, id="0", mkstream=True)
    reply: Any = await r.xreadgroup(CONSUMER_GROUP, CONSUMER, {K.outbox: ">"})
    if not reply:
        return []
    return entries(reply[K.outbox][0] if isinstance(reply, dict) else reply[0][1])


async def pending_ids(r: Redis) -> list[str]:
    rows = await r.xpending_range(K.outbox, CONSUMER_GROUP, "-", "+", 100)
    return [str(row["message_id"]) for row in rows]


async def fire_level_one(r: Redis, cid: str) -> tuple[str, dict[str, str]]:
    """A conversation whose level 1 is due, swept and read by the delivery group."""
    await track(r, cid, "m1", await redis_now(r) - T - 500)
    assert (await sweep(r, await lease(r)))[0] == 1
    (entry,) = await read_group(r)
    return entry


async def next_message(pubsub: PubSub, wait: float = 0.3) -> str | None:
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
    return None if message is None else str(message["data"])


# --- track ---------------------------------------------------------------------------------


async def test_track_starts_a_new_conversation(redis: Redis) -> None:
    ts = await redis_now(redis) - 100
    assert await track(redis, "c1", "m1", ts, agent="agent-7") == ["started", 1, ts, ts + T]
    assert await record(redis, "c1") == [
        *("W", "1", str(ts), str(T), "agent-7", "m1", str(ts)),
        *("", "", ""),
    ]
    assert await redis.zscore(K.waiting, "c1") == ts + T


async def test_track_restarts_from_a_newer_agent_message(redis: Redis) -> None:
    ts = await redis_now(redis) - T - 500
    await track(redis, "c1", "m1", ts)
    assert (await sweep(redis, await lease(redis)))[0] == 1
    assert await fired_level(redis, "c1") == 1

    newer = ts + 1200
    assert await track(redis, "c1", "m2", newer) == ["restarted", 2, newer, newer + T]
    rec = await record(redis, "c1")
    assert rec is not None
    assert rec[:3] == ["W", "2", str(newer)]
    assert rec[5] == "m2"
    assert await fired_level(redis, "c1") is None
    assert await redis.zscore(K.waiting, "c1") == newer + T


async def test_track_duplicate_message_id_is_a_noop(redis: Redis) -> None:
    ts = await redis_now(redis)
    await track(redis, "c1", "m1", ts)
    before = await snapshot(redis, "c1")
    assert await track(redis, "c1", "m1", ts + 500) == ["duplicate", 1, ts, ts + T]
    assert await snapshot(redis, "c1") == before


async def test_track_older_agent_message_is_stale_and_changes_nothing(redis: Redis) -> None:
    ts = await redis_now(redis)
    await track(redis, "c1", "m2", ts)
    before = await snapshot(redis, "c1")
    assert await track(redis, "c1", "m1", ts - 500) == ["stale", 1, ts, ts + T]
    assert await snapshot(redis, "c1") == before


async def test_track_agent_message_older_than_the_answer_is_stale(redis: Redis) -> None:
    ts = await redis_now(redis) - 5000
    await track(redis, "c1", "m1", ts)
    await respond(redis, "c1", "r1", ts + 2000)
    before = await snapshot(redis, "c1")
    assert (await track(redis, "c1", "m2", ts + 1000))[0] == "stale"
    assert await snapshot(redis, "c1") == before


async def test_track_after_an_answer_starts_a_new_generation(redis: Redis) -> None:
    ts = await redis_now(redis) - 5000
    await track(redis, "c1", "m1", ts)
    await respond(redis, "c1", "r1", ts + 1000)
    assert await track(redis, "c1", "m2", ts + 2000) == ["started", 2, ts + 2000, ts + 2000 + T]
    assert await redis.zscore(K.retired, "c1") is None
    assert await redis.zscore(K.waiting, "c1") == ts + 2000 + T


async def test_apply_takes_a_conversations_events_in_order_in_one_call(redis: Redis) -> None:
    """Agent messages and answers of one conversation in one call (guarantee 7): each sees
    the state the one before it left."""
    ts = await redis_now(redis) - 5000
    reply = await apply(
        redis,
        AgentMessage("c1", "agent-1", "m1", ts),
        CustomerResponse("c1", "u", "r1", ts + 100),
        AgentMessage("c1", "agent-1", "m2", ts + 200),
        CustomerResponse("c1", "u", "r2", ts + 300),
    )
    assert reply[0::4] == ["started", "answered", "started", "answered"]
    assert reply[1::4] == [1, 1, 2, 2]
    rec = await record(redis, "c1")
    assert rec is not None
    assert (rec[0], rec[1], rec[5], rec[8]) == ("A", "2", "m2", "r2")


async def test_apply_an_earlier_agent_message_id_again_is_a_duplicate(redis: Redis) -> None:
    """msg-1, msg-2, then msg-1 again (a client's retry): duplicate, the clock of msg-2
    goes on."""
    ts = await redis_now(redis) - 5000
    await track(redis, "c1", "msg-1", ts)
    assert (await track(redis, "c1", "msg-2", ts + 100))[:2] == ["restarted", 2]
    before = await snapshot(redis, "c1")
    assert await track(redis, "c1", "msg-1", ts + 200) == ["duplicate", 2, ts + 100, ts + 100 + T]
    assert await snapshot(redis, "c1") == before


async def test_apply_an_earlier_answer_again_is_a_duplicate(redis: Redis) -> None:
    """Agent msg-1, customer r-1, agent msg-2, then r-1 again: duplicate, msg-2's clock is
    not stopped."""
    ts = await redis_now(redis) - 5000
    await track(redis, "c1", "msg-1", ts)
    assert await respond(redis, "c1", "r-1", ts + 100) == ["answered", 100, 1]
    assert (await track(redis, "c1", "msg-2", ts + 200))[0] == "started"
    before = await snapshot(redis, "c1")
    assert await respond(redis, "c1", "r-1", ts + 300) == ["duplicate", -1, 2]
    assert await snapshot(redis, "c1") == before
    assert await redis.zscore(K.waiting, "c1") == ts + 200 + T


async def test_apply_remembers_a_refused_answer_so_its_retry_stays_refused(redis: Redis) -> None:
    ts = await redis_now(redis) - 5000
    await track(redis, "c1", "m1", ts)
    await respond(redis, "c1", "r1", ts + 100)
    assert (await respond(redis, "c1", "r2", ts + 200))[0] == "not_waiting"
    await track(redis, "c1", "m2", ts + 200)
    assert (await respond(redis, "c1", "r2", ts + 200))[0] == "duplicate"


async def test_apply_remembers_at_most_sixteen_earlier_message_ids(redis: Redis) -> None:
    ts = await redis_now(redis) - 50_000
    for n in range(20):
        await track(redis, "c1", f"m{n}", ts + n)
    rec = await record(redis, "c1")
    assert rec is not None
    assert rec[7].split(",") == [f"m{n}" for n in range(18, 2, -1)]  # newest first
    assert (await track(redis, "c1", "m3", ts + 100))[0] == "duplicate"
    assert (await track(redis, "c1", "m2", ts + 101))[0] == "restarted"  # forgotten


async def test_apply_keeps_the_period_a_restart_ends_in_the_history(redis: Redis) -> None:
    ts = await redis_now(redis) - 5000
    await track(redis, "c1", "m1", ts, agent="agent-7")
    await respond(redis, "c1", "r1", ts + 40)
    await track(redis, "c1", "m2", ts + 100)
    assert await redis.hget(K.history, "c1") == (f"S|{ts}|1|{T}|agent-7|m1\nA|{ts + 40}|1|40|r1")


async def test_track_timestamp_zero_uses_the_redis_clock(redis: Redis) -> None:
    before = await redis_now(redis)
    status, _, since, due = await track(redis, "c1", "m1", 0)
    after = await redis_now(redis)
    assert status == "started"
    assert before <= since <= after
    assert due == since + T


async def test_track_publishes_a_wake_only_when_the_deadline_moves_earlier(redis: Redis) -> None:
    ts = await redis_now(redis)
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(wake_channel(K.shard))
        assert await pubsub.get_message(timeout=1.0) is not None  # subscribe confirmation

        await track(redis, "c1", "m1", ts)  # first deadline of the shard
        assert await next_message(pubsub) == str(ts + T)
        await track(redis, "c2", "m1", ts + 500)  # later than the head: no wake
        assert await next_message(pubsub) is None
        await track(redis, "c3", "m1", ts - 500)  # earlier than the head
        assert await next_message(pubsub) == str(ts - 500 + T)
        await track(redis, "c3", "m1", ts - 900)  # duplicate: nothing written, no wake
        assert await next_message(pubsub) is None


# --- respond -------------------------------------------------------------------------------


async def test_respond_answers_with_the_response_time(redis: Redis) -> None:
    ts = await redis_now(redis) - 5000
    await track(redis, "c1", "m1", ts)
    before = await redis_now(redis)
    assert await respond(redis, "c1", "r1", ts + 2500) == ["answered", 2500, 1]
    rec = await record(redis, "c1")
    assert rec is not None
    assert rec[0] == "A"
    assert rec[8:] == ["r1", "2500"]
    assert await redis.zscore(K.waiting, "c1") is None
    retire_at = await redis.zscore(K.retired, "c1")
    assert retire_at is not None
    assert before + RETENTION <= retire_at <= await redis_now(redis) + RETENTION


async def test_respond_duplicate_replay_returns_the_same_response_time(redis: Redis) -> None:
    ts = await redis_now(redis) - 5000
    await track(redis, "c1", "m1", ts)
    await respond(redis, "c1", "r1", ts + 2500)
    before = await snapshot(redis, "c1")
    assert await respond(redis, "c1", "r1", ts + 4000) == ["duplicate", 2500, 1]
    assert await snapshot(redis, "c1") == before


async def test_respond_older_than_the_agent_message_is_stale(redis: Redis) -> None:
    ts = await redis_now(redis)
    await track(redis, "c1", "m1", ts)
    before = await snapshot(redis, "c1")
    assert await respond(redis, "c1", "r1", ts - 1) == ["stale", -1, 1]
    assert await snapshot(redis, "c1") == before


async def test_respond_without_a_waiting_conversation_is_not_waiting(redis: Redis) -> None:
    assert await respond(redis, "nobody", "r1") == ["not_waiting", -1, 0]
    assert await redis.dbsize() == 0

    ts = await redis_now(redis) - 5000
    await track(redis, "c1", "m1", ts)
    await respond(redis, "c1", "r1", ts + 100)
    before = await snapshot(redis, "c1")
    assert await respond(redis, "c1", "r2", ts + 200) == ["not_waiting", -1, 1]
    after = await snapshot(redis, "c1")
    assert after[1:] == before[1:]
    # only the refused answer's id is remembered (see the retry test above)
    assert str(after[0]).split("|")[7] == "r2"
    assert str(after[0]).split("|")[:7] == str(before[0]).split("|")[:7]


async def test_respond_timestamp_zero_uses_the_redis_clock(redis: Redis) -> None:
    ts = await redis_now(redis) - 3000
    await track(redis, "c1", "m1", ts)
    before = await redis_now(redis)
    status, response, _ = await respond(redis, "c1", "r1")
    after = await redis_now(redis)
    assert status == "answered"
    assert before - ts <= response <= after - ts


# --- sweep ---------------------------------------------------------------------------------


async def test_sweep_fires_the_due_level_and_rearms_the_next(redis: Redis) -> None:
    ts = await redis_now(redis) - T - 500
    await track(redis, "c1", "m1", ts, agent="agent-7")
    fired, next_due, now, more = await sweep(redis, await lease(redis))
    assert (fired, next_due, more) == (1, ts + 2 * T, 0)
    assert ts + T <= now <= await redis_now(redis)
    # one field: conversation|level|generation|waiting since|due|agent|agent message
    assert [fields for _, fields in await xrange(redis)] == [
        {"e": f"c1|1|1|{ts}|{ts + T}|agent-7|m1"}
    ]
    assert await events(redis) == [
        {"c": "c1", "l": "1", "g": "1", "s": str(ts), "d": str(ts + T), "a": "agent-7", "m": "m1"}
    ]
    assert await fired_level(redis, "c1") == 1
    assert await redis.zscore(K.waiting, "c1") == ts + 2 * T
    assert await redis.hgetall(K.counters) == {"total": "1", "level1": "1"}


async def test_sweep_fires_nothing_before_due(redis: Redis) -> None:
    ts = await redis_now(redis)
    await track(redis, "c1", "m1", ts)
    fired, next_due, _, more = await sweep(redis, await lease(redis))
    assert (fired, next_due, more) == (0, ts + T, 0)
    assert await events(redis) == []
    assert await fired_level(redis, "c1") is None
    assert await redis.exists(K.counters) == 0


async def test_sweep_stages_the_next_level_due_within_the_prefetch(redis: Redis) -> None:
    """Due in 0.6 s with 1 s of prefetch: staged now, with its real due time."""
    ts = await redis_now(redis) - T + 600
    await track(redis, "c1", "m1", ts)
    value = await lease(redis)
    assert (await sweep(redis, value, prefetch=500))[0] == 0  # beyond the horizon
    fired, next_due, now, _ = await sweep(redis, value, prefetch=1000)
    assert (fired, next_due) == (1, ts + 2 * T)
    assert now < ts + T
    assert [(e["l"], e["d"]) for e in await events(redis)] == [("1", str(ts + T))]
    assert (await sweep(redis, value, prefetch=1000))[0] == 0  # level 2 is further out


async def test_sweep_prefetch_stages_each_level_it_never_skips_one(redis: Redis) -> None:
    """Levels 1 and 2 both within the horizon but neither due: both are staged, one sweep
    each, each with its own due time. Only a level actually overdue catches up."""
    interval = 100
    ts = await redis_now(redis) - interval + 300
    await track(redis, "c1", "m1", ts, interval=interval)
    value = await lease(redis)
    assert (await sweep(redis, value, prefetch=1000))[0] == 1
    assert (await sweep(redis, value, prefetch=1000))[0] == 1
    assert (await sweep(redis, value, prefetch=1000))[0] == 1
    assert [(e["l"], e["d"]) for e in await events(redis)] == [
        (str(n), str(ts + n * interval)) for n in (1, 2, 3)
    ]


async def test_sweep_escalates_level_by_level(redis: Redis) -> None:
    interval = 300
    ts = await redis_now(redis) - interval - 20
    await track(redis, "c1", "m1", ts, interval=interval)
    value = await lease(redis)
    levels = []
    for _ in range(3):
        fired, next_due, _, _ = await sweep(redis, value)
        assert fired == 1
        levels.append(await fired_level(redis, "c1"))
        if next_due > 0:
            await asyncio.sleep((next_due - await redis_now(redis)) / 1000 + 0.01)
    assert levels == [1, 2, 3]
    assert [e["l"] for e in await events(redis)] == ["1", "2", "3"]
    assert [e["d"] for e in await events(redis)] == [str(ts + n * interval) for n in (1, 2, 3)]


async def test_sweep_catch_up_fires_only_the_highest_due_level(redis: Redis) -> None:
    ts = await redis_now(redis) - 10 * T
    await track(redis, "c1", "m1", ts)
    value = await lease(redis)
    assert (await sweep(redis, value))[:2] == [1, -1]
    assert [(e["l"], e["d"]) for e in await events(redis)] == [("3", str(ts + 3 * T))]
    assert await redis.hgetall(K.counters) == {"total": "1", "level3": "1"}
    assert (await sweep(redis, value))[0] == 0
    assert len(await events(redis)) == 1


async def test_sweep_catch_up_from_level_one_jumps_to_the_highest_due(redis: Redis) -> None:
    interval = 300
    ts = await redis_now(redis) - interval - 20
    await track(redis, "c1", "m1", ts, interval=interval)
    value = await lease(redis)
    assert (await sweep(redis, value))[0] == 1
    # The sweeper is away until levels 2 and 3 are both overdue: only level 3 fires.
    await asyncio.sleep((ts + 3 * interval - await redis_now(redis)) / 1000 + 0.02)
    assert (await sweep(redis, value))[0] == 1
    assert [e["l"] for e in await events(redis)] == ["1", "3"]


async def test_sweep_after_level_three_leaves_waiting_and_retires_the_record(
    redis: Redis,
) -> None:
    retention = 300
    await track(redis, "c1", "m1", await redis_now(redis) - 10 * T)
    value = await lease(redis)
    await sweep(redis, value, retention=retention)
    assert await redis.zscore(K.waiting, "c1") is None
    rec = await record(redis, "c1")
    assert rec is not None
    assert rec[0] == "E"
    assert await fired_level(redis, "c1") == 3

    await sweep(redis, value, retention=retention)  # before the retention ends: kept
    assert await record(redis, "c1") is not None
    await asyncio.sleep(retention / 1000 + 0.05)
    await sweep(redis, value, retention=retention)
    assert await snapshot(redis, "c1") == (None, None, None, None, None)


async def test_sweep_retires_answered_records(redis: Redis) -> None:
    retention = 300
    ts = await redis_now(redis) - 5000
    await track(redis, "c1", "m1", ts)
    await respond(redis, "c1", "r1", ts + 100, retention=retention)
    value = await lease(redis)
    await sweep(redis, value)
    assert await record(redis, "c1") is not None
    await asyncio.sleep(retention / 1000 + 0.05)
    assert (await sweep(redis, value))[0] == 0
    assert await snapshot(redis, "c1") == (None, None, None, None, None)
    assert await events(redis) == []


async def test_sweep_counts_every_level(redis: Redis) -> None:
    now = await redis_now(redis)
    await track(redis, "c1", "m1", now - T - 100)
    await track(redis, "c2", "m1", now - T - 200)
    await track(redis, "c3", "m1", now - 2 * T - 100)
    await track(redis, "c4", "m1", now - 5 * T)
    await track(redis, "c5", "m1", now)
    assert (await sweep(redis, await lease(redis)))[0] == 4
    assert await redis.hgetall(K.counters) == {
        "total": "4",
        "level1": "2",
        "level2": "1",
        "level3": "1",
    }


async def test_sweep_batch_reports_more_due(redis: Redis) -> None:
    now = await redis_now(redis)
    for n in range(3):
        await track(redis, f"c{n}", "m1", now - T - 100 - n)
    value = await lease(redis)
    assert (await sweep(redis, value, batch=2))[0::3] == [2, 1]
    assert (await sweep(redis, value, batch=2))[0::3] == [1, 0]


@pytest.mark.parametrize("holder", [None, "pod-b"])
async def test_sweep_without_the_lease_is_fenced(redis: Redis, holder: str | None) -> None:
    await track(redis, "c1", "m1", await redis_now(redis) - 10 * T)
    if holder is not None:
        await lease(redis, holder)
    before = await snapshot(redis, "c1")
    with pytest.raises(FencedError):
        await sweep(redis, f"{POD}|1")
    assert await snapshot(redis, "c1") == before
    assert await redis.exists(K.outbox, K.counters) == 0


async def test_sweep_with_a_stale_token_of_the_same_pod_is_fenced(redis: Redis) -> None:
    await track(redis, "c1", "m1", await redis_now(redis) - 10 * T)
    old = await lease(redis)
    new = await lease(redis)
    with pytest.raises(FencedError):
        await sweep(redis, old)
    assert await events(redis) == []
    assert (await sweep(redis, new))[0] == 1


# --- leases --------------------------------------------------------------------------------


def token(value: str) -> int:
    return int(value.rsplit("|", 1)[1])


async def test_lease_acquire_gives_an_increasing_fencing_token(redis: Redis) -> None:
    first = await lease(redis, POD)
    assert first.startswith(f"{POD}|")
    assert 0 < await redis.pttl(K.leader) <= TTL
    assert await redis.get(K.leader) == first

    assert await acquire(redis, "pod-b") is None  # held by another pod
    assert await redis.get(K.leader) == first

    again = await lease(redis, POD)
    assert token(again) > token(first)
    assert await redis.get(K.leader) == again


async def test_lease_expired_is_taken_by_another_pod_with_a_higher_token(redis: Redis) -> None:
    first = await acquire(redis, POD, ttl=50)
    assert first is not None
    await asyncio.sleep(0.1)
    second = await lease(redis, "pod-b")
    assert second.startswith("pod-b|")
    assert token(second) > token(first)
    assert not await run(redis, renew_call(K.shard, first, TTL))
    assert await redis.get(K.leader) == second


async def test_lease_renew_extends_only_the_held_lease(redis: Redis) -> None:
    value = await lease(redis)
    await redis.pexpire(K.leader, 500)
    assert await run(redis, renew_call(K.shard, value, TTL))
    assert await redis.pttl(K.leader) > 500

    newer = await lease(redis)
    await redis.pexpire(K.leader, 500)
    assert not await run(redis, renew_call(K.shard, value, TTL))
    assert await redis.pttl(K.leader) <= 500
    assert await redis.get(K.leader) == newer


async def test_lease_release_drops_only_the_held_lease(redis: Redis) -> None:
    old = await lease(redis)
    current = await lease(redis)
    assert not await run(redis, release_call(K.shard, old))
    assert await redis.get(K.leader) == current
    assert await run(redis, release_call(K.shard, current))
    assert await redis.exists(K.leader) == 0
    assert not await run(redis, release_call(K.shard, current))

    other = await lease(redis, "pod-b")
    assert token(other) > token(current)


# --- recheck -------------------------------------------------------------------------------


async def recheck(r: Redis, *asks: tuple[str, int], due_ms: int = 0, level: int = 1) -> list[int]:
    """The codes (the reply's last value, Redis's clock, is checked and left out)."""
    batch = [
        Notification("0-1", K.shard, conversation, level, generation, "a", "m", 0, due_ms)
        for conversation, generation in asks
    ]
    verdicts, now = await run(r, ledger.recheck_call(K.shard, batch, MULTIPLIERS))
    assert abs(now - await redis_now(r)) < 1000
    return [int(v) for v in verdicts]


async def ack(
    r: Redis, *entry_ids: str, forget_attempts: bool = True, outcome: str = "D", at: int = 0
) -> int:
    """Acknowledge entries of conversation c1's level 1, generation 1."""
    mine = [Notification(e, K.shard, "c1", 1, 1, "a", "m", 0, 0) for e in entry_ids]
    entries = [ledger.ack_entry(n, Outcome(outcome), "webhook") for n in mine]
    return await run(r, ack_call(K.shard, entries, had_attempts=forget_attempts, at_ms=at))


async def test_recheck_sends_a_current_notification(redis: Redis) -> None:
    await track(redis, "c1", "m1")
    assert await recheck(redis, ("c1", 1)) == [1]


async def test_recheck_holds_back_a_notification_not_due_on_redis_clock(redis: Redis) -> None:
    """A consumer whose clock runs ahead asks too early: 2, hold it; stale still wins."""
    ts = await redis_now(redis)
    await track(redis, "c1", "m1", ts)
    assert await recheck(redis, ("c1", 1), due_ms=ts + 60_000) == [2]
    assert await recheck(redis, ("c1", 1), due_ms=ts - 1) == [1]
    await respond(redis, "c1", "r1", ts + 1)
    assert await recheck(redis, ("c1", 1), due_ms=ts + 60_000) == [0]


async def test_recheck_is_stale_after_an_answer(redis: Redis) -> None:
    ts = await redis_now(redis) - 5000
    await track(redis, "c1", "m1", ts)
    await respond(redis, "c1", "r1", ts + 100)
    assert await recheck(redis, ("c1", 1)) == [0]


async def test_recheck_is_stale_after_a_restart_and_elsewhere_for_unknown(redis: Redis) -> None:
    """Unknown here: 3, for the caller to ask the shard a reshard may have moved it to."""
    ts = await redis_now(redis)
    await track(redis, "c1", "m1", ts - 100)
    await track(redis, "c1", "m2", ts)
    assert await recheck(redis, ("c1", 1), ("c1", 2), ("nobody", 1)) == [0, 1, 3]


async def test_recheck_reads_a_record_a_reshard_is_moving(redis: Redis) -> None:
    """Taken out of its shard into moving_conversations, the record still answers."""
    await track(redis, "c1", "m1")
    raw = str(await redis.hget(K.records, "c1"))
    await redis.hdel(K.records, "c1")
    await redis.hset(K.moving, "c1", f"{raw}|1000||")
    assert await recheck(redis, ("c1", 1), ("c1", 2)) == [1, 0]


async def test_recheck_supersedes_a_level_below_one_staged_and_due(redis: Redis) -> None:
    """Level 2 staged: level 1 is still sent while level 2 is not due yet, superseded (4)
    once it is (guarantee 7: a lower level never follows a higher one)."""
    ts = await redis_now(redis)
    await track(redis, "c1", "m1", ts - T - 200, interval=T)
    value = await lease(redis)
    await sweep(redis, value, prefetch=2 * T)  # level 1, due
    await sweep(redis, value, prefetch=2 * T)  # level 2, staged: due in 800 ms
    assert await fired_level(redis, "c1") == 2
    assert await recheck(redis, ("c1", 1), due_ms=ts - 200, level=1) == [1]
    await asyncio.sleep((ts - 200 + T - await redis_now(redis)) / 1000 + 0.01)
    assert await recheck(redis, ("c1", 1), due_ms=ts - 200, level=1) == [4]
    assert await recheck(redis, ("c1", 1), due_ms=ts - 200 + T, level=2) == [1]


# --- deliver_stream ------------------------------------------------------------------------

OUTBOUND = "out"


async def deliver_stream(r: Redis, *entries: tuple[str, dict[str, str]]) -> list[int]:
    """deliver_stream.lua for these shard stream entries; the codes, then Redis's clock."""
    batch = [Notification.from_entry(K.shard, i, f) for i, f in entries]
    call = ledger.deliver_stream_call(
        K.shard, batch, stream=OUTBOUND, maxlen=1000, multipliers=MULTIPLIERS, had_attempts=False
    )
    verdicts, now = await run(r, call)
    return [*(int(v) for v in verdicts), now]


async def test_deliver_stream_writes_and_acknowledges_in_one_call(redis: Redis) -> None:
    sent = await fire_level_one(redis, "c1")
    *codes, now = await deliver_stream(redis, sent)
    assert codes == [1]
    assert abs(now - await redis_now(redis)) < 1000
    ((_, event),) = await xrange(redis, OUTBOUND)
    n = Notification.from_entry(K.shard, *sent)
    assert event == {
        "event_id": n.event_id,
        "conversation_id": "c1",
        "level": "1",
        "agent_id": "agent-1",
        "message_id": "m1",
        "waiting_since": format_ms(n.waiting_since_ms),
        "due_at": format_ms(n.due_at_ms),
        "fired_at": format_ms(now),  # Redis's clock when it became readable
    }
    assert await pending_ids(redis) == []
    assert await redis.hget(K.history, "c1") is None  # noted by the caller, after
    assert await ack(redis, sent[0], at=now) == 0  # the note: acknowledged already
    kind, at, gen, level, sinks, staged = str(await redis.hget(K.history, "c1")).split("|")
    assert (kind, int(at), gen, level, sinks) == ("D", now, "1", "1", "webhook")
    assert staged == sent[0].split("-")[0]


async def test_deliver_stream_suppresses_holds_back_and_points_elsewhere(redis: Redis) -> None:
    """Answered: acknowledged unsent (0); not due on Redis's clock: left pending (2);
    unknown here: left pending for the caller to look elsewhere (3)."""
    answered = await fire_level_one(redis, "c1")
    await respond(redis, "c1", "r1")
    early_id, early = await fire_level_one(redis, "c2")
    early = {**early, "e": early["e"].replace(early["e"].split("|")[4], "99999999999999")}
    unknown_id = str(await redis.xadd(K.outbox, {"e": "gone|1|1|0|0|a|m"}))
    (unknown,) = [e for e in await read_group(redis) if e[0] == unknown_id]
    *codes, _ = await deliver_stream(redis, answered, (early_id, early), unknown)
    assert codes == [0, 2, 3]
    assert await xrange(redis, OUTBOUND) == []
    assert sorted(await pending_ids(redis)) == sorted([early_id, unknown_id])


async def test_deliver_stream_names_dates_as_python_does(redis: Redis) -> None:
    """The script formats fired_at itself (Redis's clock): the same text as format_ms for
    dates across leap years, month ends and the end of a century."""
    script = (
        "return {" + ", ".join(f"rfc3339({ms})" for ms in DATES) + "}"
    )  # the function as deliver_stream.lua defines it
    source = ledger.DELIVER_STREAM.source
    start = source.index("local function rfc3339(ms)")
    end = source.index("\nend\n", start) + 5
    got = await redis.eval(source[start:end] + "\n" + script, 0)
    assert got == [format_ms(ms) for ms in DATES]


DATES = (
    0,
    951_782_400_000,  # 2000-02-29
    951_868_799_999,  # 2000-02-29T23:59:59.999
    1_709_251_199_123,  # 2024-02-29
    1_735_689_599_999,  # 2024-12-31T23:59:59.999
    4_107_542_400_000,  # 2100-03-01 (2100 is no leap year)
    1_795_983_000_001,
)


# --- ack -----------------------------------------------------------------------------------


async def test_ack_acknowledges_clears_attempts_and_notes_the_delivery(redis: Redis) -> None:
    entry_id, _ = await fire_level_one(redis, "c1")
    await redis.hset(K.attempts, mapping={entry_id: 2, f"{entry_id}:last": "x", "other": 1})
    assert await pending_ids(redis) == [entry_id]
    before = await redis.hget(K.records, "c1")

    assert await ack(redis, entry_id) == 1
    assert await pending_ids(redis) == []
    assert await redis.hgetall(K.attempts) == {"other": "1"}
    assert await redis.hget(K.records, "c1") == before  # the record is not written
    kind, at, gen, level, sinks, staged = str(await redis.hget(K.history, "c1")).split("|")
    assert (kind, gen, level, sinks, staged) == ("D", "1", "1", "webhook", entry_id.split("-")[0])
    assert abs(int(at) - await redis_now(redis)) < 1000


async def test_ack_notes_a_suppressed_notification(redis: Redis) -> None:
    entry_id, _ = await fire_level_one(redis, "c1")
    await ack(redis, entry_id, outcome="U")
    assert str(await redis.hget(K.history, "c1")).split("|")[0::2] == ["U", "1"]


async def test_ack_keeps_attempts_unless_told_and_counts_what_it_acknowledged(
    redis: Redis,
) -> None:
    entry_id, _ = await fire_level_one(redis, "c1")
    await redis.hset(K.attempts, entry_id, 1)
    assert await ack(redis, entry_id, "0-1", forget_attempts=False) == 1  # 0-1: not pending
    assert await redis.hgetall(K.attempts) == {entry_id: "1"}
    assert await ack(redis, entry_id) == 0  # already acknowledged


# --- attempt_failed ------------------------------------------------------------------------


async def test_attempt_failed_counts_keeps_the_error_and_notes_it(redis: Redis) -> None:
    entry_id, _ = await fire_level_one(redis, "c1")
    for n in (1, 2):
        mine = Notification(entry_id, K.shard, "c1", 1, 1, "a", "m", 0, 0)
        assert await run(redis, attempt_failed_call(mine, "webhook", f"webhook: HTTP 50{n}")) == n
    _, sink, error = str(await redis.hget(K.attempts, f"{entry_id}:last")).split("|")
    assert (sink, error) == ("webhook", "webhook: HTTP 502")
    history = str(await redis.hget(K.history, "c1")).split("\n")
    assert [h.split("|", 4)[4] for h in history] == [
        "webhook|webhook: HTTP 501",
        "webhook|webhook: HTTP 502",
    ]
    assert await pending_ids(redis) == [entry_id]  # still to deliver


# --- dead_letter ---------------------------------------------------------------------------


async def test_dead_letter_moves_the_entry_with_its_reason_and_acks(redis: Redis) -> None:
    entry_id, fields = await fire_level_one(redis, "c1")
    await redis.hset(K.attempts, mapping={entry_id: 5, f"{entry_id}:last": "1|webhook|x"})
    about = Notification.from_entry(K.shard, entry_id, fields)
    call = dead_letter_call(K.shard, entry_id, "webhook 410 Gone", 5, list(fields.items()), about)
    dl_id = await run(redis, call)

    (dead,) = await xrange(redis, K.dead_letters)
    assert dead[0] == dl_id
    assert dead[1] == {
        "reason": "webhook 410 Gone",
        "attempts": "5",
        "source_id": entry_id,
        **fields,
    }
    assert await pending_ids(redis) == []
    assert await redis.hgetall(K.attempts) == {}
    kind, _, gen, level, reason = str(await redis.hget(K.history, "c1")).split("|")
    assert (kind, gen, level, reason) == ("X", "1", "1", "webhook 410 Gone")


async def test_dead_letter_of_an_unreadable_entry_keeps_its_fields(redis: Redis) -> None:
    await redis.xgroup_create(K.outbox, CONSUMER_GROUP, id="0", mkstream=True)
    entry_id = str(await redis.xadd(K.outbox, {"e": "not|a|valid|entry"}))
    await read_group(redis)
    raw = [("e", "not|a|valid|entry")]
    await run(redis, dead_letter_call(K.shard, entry_id, "malformed: 4 values", 1, raw))
    ((_, fields),) = await xrange(redis, K.dead_letters)
    assert fields["e"] == "not|a|valid|entry"
    assert await pending_ids(redis) == []
    assert await redis.exists(K.history) == 0


# --- trim ----------------------------------------------------------------------------------


async def trim(r: Redis) -> int:
    return await run(r, trim_call(K.shard))


async def stream_ids(r: Redis) -> list[str]:
    return [entry_id for entry_id, _ in await xrange(r)]


async def test_trim_without_a_stream_or_group_trims_nothing(redis: Redis) -> None:
    assert await trim(redis) == 0
    await redis.xadd(K.outbox, {"c": "c1"})
    assert await trim(redis) == 0
    assert await redis.xlen(K.outbox) == 1


async def test_trim_never_trims_a_pending_entry(redis: Redis) -> None:
    for n in range(3):
        await redis.xadd(K.outbox, {"c": f"c{n}"})
    ids = [entry_id for entry_id, _ in await read_group(redis)]
    assert await trim(redis) == 0
    assert await stream_ids(redis) == ids

    await redis.xack(K.outbox, CONSUMER_GROUP, ids[0], ids[2])
    assert await trim(redis) == 1
    assert await stream_ids(redis) == ids[1:]


async def test_trim_removes_delivered_and_acked_entries_but_not_unread(redis: Redis) -> None:
    await redis.xgroup_create(K.outbox, CONSUMER_GROUP, id="0", mkstream=True)
    ids = [str(await redis.xadd(K.outbox, {"c": f"c{n}"})) for n in range(4)]
    reply = await redis.xreadgroup(CONSUMER_GROUP, CONSUMER, {K.outbox: ">"}, count=2)
    assert reply
    await redis.xack(K.outbox, CONSUMER_GROUP, *ids[:2])
    assert await trim(redis) == 2
    assert await stream_ids(redis) == ids[2:]

    await read_group(redis)
    await redis.xack(K.outbox, CONSUMER_GROUP, *ids[2:])
    assert await trim(redis) == 2
    assert await redis.xlen(K.outbox) == 0


async def test_trim_keeps_what_the_slowest_group_needs(redis: Redis) -> None:
    ids = [str(await redis.xadd(K.outbox, {"c": f"c{n}"})) for n in range(3)]
    await read_group(redis)
    await redis.xack(K.outbox, CONSUMER_GROUP, *ids)
    await redis.xgroup_create(K.outbox, "audit", id="0")
    await redis.xreadgroup("audit", CONSUMER, {K.outbox: ">"}, count=1)
    await redis.xack(K.outbox, "audit", ids[0])
    assert await trim(redis) == 1
    assert await stream_ids(redis) == ids[1:]
