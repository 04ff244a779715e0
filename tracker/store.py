"""Conversation state in Redis: typed wrappers around the track and respond scripts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from tracker.keys import ShardKeys, shard_of, wake_channel
from tracker.scripts import Arg, Script, Scripts, run_batch
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
    level_delivered: int
    next_due_ms: int | None
    response_time_ms: int | None


class Store:
    """Applies agent messages and customer responses, one atomic script each."""

    def __init__(self, redis: Redis, settings: Settings, scripts: Scripts) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = scripts

    def _keys(self, conversation_id: str) -> ShardKeys:
        return ShardKeys.of(shard_of(conversation_id, self.settings.shard_count))

    def _call(self, event: Event) -> tuple[Script, list[str], list[Arg]]:
        k = self._keys(event.conversation_id)
        keys = [k.records, k.waiting, k.states, k.retired]
        if isinstance(event, AgentMessage):
            interval = event.timeout_ms or self.settings.timeout_interval_ms
            args: list[Arg] = [
                event.conversation_id,
                event.agent_id,
                event.message_id,
                event.timestamp_ms,
                interval,
                self.settings.level_multipliers[0],
                wake_channel(k.shard),
            ]
            return self.scripts.track, keys, args
        args = [
            event.conversation_id,
            event.message_id,
            event.timestamp_ms,
            self.settings.answered_retention_ms,
        ]
        return self.scripts.respond, keys, args

    async def apply(self, event: Event) -> Result:
        script, keys, args = self._call(event)
        return _result(event, await script.run(self.redis, keys, args))

    async def apply_many(self, events: Sequence[Event]) -> list[Result]:
        """Apply a batch in one round trip; each event is still its own atomic script."""
        if not events:
            return []
        raw = await run_batch(self.redis, [self._call(e) for e in events])
        return [_result(e, r) for e, r in zip(events, raw, strict=True)]

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
        level_delivered=int(r[7]),
        next_due_ms=int(due) if due is not None else None,
        response_time_ms=int(r[9]) if r[9] else None,
    )
