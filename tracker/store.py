"""Conversation state in Redis: typed wrappers around the track and respond scripts."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from redis.asyncio import Redis
from redis.exceptions import TryAgainError

from tracker.keys import ShardKeys, wake_channel
from tracker.lane import AnyLane
from tracker.layout import Layout, LiveLayout, is_refused
from tracker.moves import move
from tracker.scripts import Arg, Scripts, run_batch
from tracker.scripts import Call as ScriptCall
from tracker.settings import Settings

STATES = {"W": "waiting", "E": "escalated", "A": "answered"}


class AgentMessage(NamedTuple):
    conversation_id: str
    agent_id: str
    message_id: str
    timestamp_ms: int
    timeout_ms: int | None = None


class CustomerResponse(NamedTuple):
    conversation_id: str
    customer_id: str
    message_id: str
    timestamp_ms: int


Event = AgentMessage | CustomerResponse


class TrackResult(NamedTuple):
    status: str
    generation: int
    waiting_since_ms: int
    next_due_ms: int | None


class RespondResult(NamedTuple):
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
    next_due_ms: int | None
    response_time_ms: int | None


def track_arg(
    conversation_id: str, agent_id: str, message_id: str, ts_ms: int, interval_ms: int
) -> str:
    """One agent message as the track script takes it (ids never hold '|': validation)."""
    return f"{conversation_id}|{agent_id}|{message_id}|{ts_ms}|{interval_ms}"


def respond_arg(conversation_id: str, message_id: str, ts_ms: int) -> str:
    """One customer response as the respond script takes it."""
    return f"{conversation_id}|{message_id}|{ts_ms}"


#: Events per script call: bounded so a call's arguments stay small and Redis stays responsive.
CALL_SIZE = 500
#: Times a batch is routed again after a shard refused the layout it was routed by.
REROUTES = 5


@dataclass(slots=True)
class _Call:
    """One planned script call: a run of one kind of event for one shard."""

    shard: int
    agent: bool
    indices: list[int]


class Store:
    """Applies agent messages and customer responses, one atomic script each."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        scripts: Scripts,
        layout: LiveLayout | None = None,
        lane: AnyLane | None = None,
    ) -> None:
        self.redis = redis
        self.lane = lane  # the event scripts' calls go by it when given
        self.settings = settings
        self.scripts = scripts
        self.layout = layout or LiveLayout(redis, settings)
        self.pending: list[tuple[Event, asyncio.Future[Result]]] = []
        self.flushing: set[asyncio.Task[None]] = set()

    @staticmethod
    def _plan(events: Sequence[Event], indices: Sequence[int], layout: Layout) -> list[_Call]:
        """Group events into script calls: per shard, runs of one kind, in arrival order.

        A shard's calls run in the order planned, so its events apply in order.
        """
        calls: list[_Call] = []
        last: dict[int, _Call] = {}
        for index in indices:
            event = events[index]
            shard = layout.shard(event.conversation_id)
            agent = isinstance(event, AgentMessage)
            call = last.get(shard)
            if call is None or call.agent != agent or len(call.indices) >= CALL_SIZE:
                call = _Call(shard, agent, [])
                calls.append(call)
                last[shard] = call
            call.indices.append(index)
        return calls

    def _script_call(self, call: _Call, events: Sequence[Event], epoch: int) -> ScriptCall:
        k = ShardKeys.of(call.shard)
        keys = k.for_writes
        s = self.settings
        if call.agent:
            args: list[Arg] = [epoch, s.level_multipliers[0], wake_channel(call.shard)]
            for i in call.indices:
                e = cast(AgentMessage, events[i])
                interval = e.timeout_ms or s.timeout_interval_ms
                args.append(
                    track_arg(e.conversation_id, e.agent_id, e.message_id, e.timestamp_ms, interval)
                )
            return self.scripts.track, keys, args
        args = [epoch, s.answered_retention_ms]
        for i in call.indices:
            r = cast(CustomerResponse, events[i])
            args.append(respond_arg(r.conversation_id, r.message_id, r.timestamp_ms))
        return self.scripts.respond, keys, args

    async def apply_many(self, events: Sequence[Event]) -> list[Result]:
        """Apply a batch in one round trip: one script call per shard and kind, in order.

        While a reshard runs, the batch's conversations still in their old shard move first.
        A call a shard refuses for its layout epoch changed nothing: its events are routed
        again by the reloaded layout.
        """
        if not events:
            return []
        results: list[Result | None] = [None] * len(events)
        todo: Sequence[int] = range(len(events))
        for _ in range(REROUTES):
            layout = await self.layout.get()
            refused = await self._apply(events, todo, layout, results)
            if refused is None:
                return cast(list[Result], results)
            todo = refused
            await self.layout.refresh()
        raise TryAgainError("the shard layout kept changing while applying a batch")

    async def _apply(
        self,
        events: Sequence[Event],
        todo: Sequence[int],
        layout: Layout,
        results: list[Result | None],
    ) -> list[int] | None:
        """Apply events[todo] by `layout` into `results`; the indices refused, or None."""
        if layout.previous is not None:
            try:
                await move(
                    self.redis, self.scripts, layout, {events[i].conversation_id for i in todo}
                )
            except Exception as exc:
                if is_refused(exc):
                    return list(todo)
                raise
        calls = self._plan(events, todo, layout)
        script_calls = [self._script_call(c, events, layout.epoch) for c in calls]
        replies = await run_batch(self.lane or self.redis, script_calls, raise_on_error=False)
        refused: list[int] = []
        for call, reply in zip(calls, replies, strict=True):
            if is_refused(reply):
                refused += call.indices
                continue
            if isinstance(reply, Exception):
                raise reply
            _results(call, reply, results)
        return sorted(refused) if refused else None

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
        """The conversation's state; while a reshard runs, its old shard is asked first (it
        holds the conversation until the move's last step, after the new shard has it)."""
        layout = await self.layout.get()
        view = await self._locate(layout, conversation_id)
        if view is None:  # perhaps moved by a reshard this process has not noticed yet
            fresh = await self.layout.refresh()
            if fresh != layout:
                view = await self._locate(fresh, conversation_id)
        return view

    async def _locate(self, layout: Layout, conversation_id: str) -> Conversation | None:
        source = layout.source(conversation_id)
        if source is not None:
            view = await self._read(source, conversation_id)
            if view is not None:
                return view
        return await self._read(layout.shard(conversation_id), conversation_id)

    async def _read(self, shard: int, conversation_id: str) -> Conversation | None:
        k = ShardKeys.of(shard)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(k.records, conversation_id)
            pipe.hget(k.states, conversation_id)
            pipe.zscore(k.waiting, conversation_id)
            pipe.hget(k.moving, conversation_id)
            pipe.time()
            raw, fired, due, moving, (seconds, micros) = await pipe.execute()
        if raw is None and moving is not None:  # taken out by a move in progress
            raw, due_s, fired, _ = moving.rsplit("|", 3)
            due = float(due_s) if due_s else None
        if raw is None:
            return None
        view = _conversation(conversation_id, raw, fired or None, due)
        return self._as_delivered(view, seconds * 1000 + micros // 1000)

    def _as_delivered(self, view: Conversation, now_ms: int) -> Conversation:
        """The view as the receivers see it: a level the sweeper staged early (PREFETCH_MS)
        is not fired until its due time comes."""
        if not view.level_fired or view.state == "answered":
            return view
        offsets = self.settings.level_offsets_ms(view.timeout_ms)
        staged_due = view.waiting_since_ms + offsets[view.level_fired - 1]
        if staged_due <= now_ms:
            return view
        return dataclasses.replace(
            view, state="waiting", level_fired=view.level_fired - 1, next_due_ms=staged_due
        )


def _results(call: _Call, reply: list[Any], results: list[Result | None]) -> None:
    """A script's flat reply (4 values an agent message, 3 a response) into results."""
    if call.agent:
        for j, index in enumerate(call.indices):
            status, gen, since, due = reply[4 * j : 4 * j + 4]
            results[index] = TrackResult(status, int(gen), int(since), due if due >= 0 else None)
        return
    for j, index in enumerate(call.indices):
        status, response, gen = reply[3 * j : 3 * j + 3]
        results[index] = RespondResult(status, response if response >= 0 else None, int(gen))


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
        next_due_ms=int(due) if due is not None else None,
        response_time_ms=int(r[9]) if r[9] else None,
    )
