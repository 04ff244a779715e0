"""Conversation state in Redis: typed wrappers around the track and respond scripts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from tracker.keys import ShardKeys, shard_of, wake_channel
from tracker.scripts import Arg, Scripts, run_batch
from tracker.scripts import Call as ScriptCall
from tracker.settings import Settings

STATES = {"W": "waiting", "E": "escalated", "A": "answered"}


@dataclass(frozen=True, slots=True)
class AgentMessage:
    conversation_id: str
    agent_id: str
    message_id: str
    timestamp_ms: int
    timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CustomerResponse:
    conversation_id: str
    customer_id: str
    message_id: str
    timestamp_ms: int


Event = AgentMessage | CustomerResponse


@dataclass(frozen=True, slots=True)
class TrackResult:
    status: str
    generation: int
    waiting_since_ms: int
    next_due_ms: int | None


@dataclass(frozen=True, slots=True)
class RespondResult:
    status: str
    response_time_ms: int | None
    generation: int


Result = TrackResult | RespondResult


@dataclass(frozen=True, slots=True)
class Conversation:
    """What one conversation looks like now (the GET view)."""

    conversation_id: str
    state: str
    generation: int
    waiting_since_ms: int
    timeout_ms: int
    agent_id: str
    message_id: str
    level_fired: int
    levels_delivered: list[int]
    next_due_ms: int | None
    response_time_ms: int | None


#: Events per script call: bounded so a call's arguments stay small and Redis stays responsive.
CALL_SIZE = 500


@dataclass(slots=True)
class _Call:
    """One planned script call: a run of one kind of event for one shard."""

    shard: int
    agent: bool
    indices: list[int]


class Store:
    """Applies agent messages and customer responses, one atomic script each."""

    def __init__(self, redis: Redis, settings: Settings, scripts: Scripts) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = scripts
        self.pending: list[tuple[Event, asyncio.Future[Result]]] = []
        self.flushing: set[asyncio.Task[None]] = set()

    def _keys(self, conversation_id: str) -> ShardKeys:
        return ShardKeys.of(shard_of(conversation_id, self.settings.shard_count))

    def _plan(self, events: Sequence[Event]) -> list[_Call]:
        """Group events into script calls: per shard, runs of one kind, in arrival order.

        A shard's calls run in the order planned, so its events apply in order.
        """
        calls: list[_Call] = []
        last: dict[int, _Call] = {}
        for index, event in enumerate(events):
            shard = shard_of(event.conversation_id, self.settings.shard_count)
            agent = isinstance(event, AgentMessage)
            call = last.get(shard)
            if call is None or call.agent != agent or len(call.indices) >= CALL_SIZE:
                call = _Call(shard, agent, [])
                calls.append(call)
                last[shard] = call
            call.indices.append(index)
        return calls

    def _script_call(self, call: _Call, events: Sequence[Event]) -> ScriptCall:
        k = ShardKeys.of(call.shard)
        keys = [k.records, k.waiting, k.states, k.retired]
        s = self.settings
        if call.agent:
            args: list[Arg] = [s.level_multipliers[0], wake_channel(call.shard)]
            for i in call.indices:
                e = cast(AgentMessage, events[i])
                interval = e.timeout_ms or s.timeout_interval_ms
                args += [e.conversation_id, e.agent_id, e.message_id, e.timestamp_ms, interval]
            return self.scripts.track, keys, args
        args = [s.answered_retention_ms]
        for i in call.indices:
            r = cast(CustomerResponse, events[i])
            args += [r.conversation_id, r.message_id, r.timestamp_ms]
        return self.scripts.respond, keys, args

    async def apply_many(self, events: Sequence[Event]) -> list[Result]:
        """Apply a batch in one round trip: one script call per shard and kind, in order."""
        if not events:
            return []
        calls = self._plan(events)
        replies = await run_batch(self.redis, [self._script_call(c, events) for c in calls])
        results: list[Result | None] = [None] * len(events)
        for call, reply in zip(calls, replies, strict=True):
            width = 4 if call.agent else 3
            for j, index in enumerate(call.indices):
                results[index] = _result(events[index], reply[j * width : (j + 1) * width])
        return cast(list[Result], results)

    async def apply(self, event: Event) -> Result:
        """Apply one event. Events that arrive in the same event-loop turn (concurrent
        requests) share one round trip to Redis: automatic pipelining."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        if not self.pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self.pending.append((event, future))
        return await future

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        task = asyncio.ensure_future(self._send(batch))
        self.flushing.add(task)
        task.add_done_callback(self.flushing.discard)

    async def _send(self, batch: list[tuple[Event, asyncio.Future[Result]]]) -> None:
        try:
            results = await self.apply_many([event for event, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def get(self, conversation_id: str) -> Conversation | None:
        k = self._keys(conversation_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(k.records, conversation_id)
            pipe.hget(k.states, conversation_id)
            pipe.zscore(k.waiting, conversation_id)
            raw, fired, due = await pipe.execute()
        if raw is None:
            return None
        return _conversation(conversation_id, raw, fired, due)


def _result(event: Event, raw: list[Any]) -> Result:
    if isinstance(event, AgentMessage):
        due = int(raw[3])
        return TrackResult(str(raw[0]), int(raw[1]), int(raw[2]), due if due >= 0 else None)
    response = int(raw[1])
    return RespondResult(str(raw[0]), response if response >= 0 else None, int(raw[2]))


def _conversation(
    conversation_id: str, raw: str, fired: str | None, due: float | None
) -> Conversation:
    r = raw.split("|")
    return Conversation(
        conversation_id=conversation_id,
        state=STATES[r[0]],
        generation=int(r[1]),
        waiting_since_ms=int(r[2]),
        timeout_ms=int(r[3]),
        agent_id=r[4],
        message_id=r[5],
        level_fired=int(fired or 0),
        levels_delivered=[level for level in (1, 2, 3) if int(r[7]) >> (level - 1) & 1],
        next_due_ms=int(due) if due is not None else None,
        response_time_ms=int(r[9]) if r[9] else None,
    )
