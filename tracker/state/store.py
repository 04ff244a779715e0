"""Conversation state in Redis: events applied through the apply script, in request order per
conversation, and the reads behind GET."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.exceptions import TryAgainError

from tracker.model import (
    RECORD_FIELDS,
    RECORD_STATES,
    AgentMessage,
    Conversation,
    Event,
    Level,
    Record,
    RespondResult,
    Result,
    TrackResult,
)
from tracker.redis.cluster import is_cluster
from tracker.redis.connection import Client, redis_time_ms, time_ms
from tracker.redis.keys import ShardKeys, wake_channel
from tracker.redis.lane import AnyLane
from tracker.redis.replies import EpochRefused
from tracker.redis.scripts import Arg, Call, Script, run_each
from tracker.settings import Settings
from tracker.state.history import levels, timeline
from tracker.state.history import parse as parse_history
from tracker.state.layout import Layout, LiveLayout
from tracker.state.moves import move

APPLY = Script.load("apply")


@dataclass(slots=True)
class Refused:
    """Events a shard refused for the layout epoch they were routed by, and the highest
    epoch the refusing shards named."""

    indices: list[int]
    epoch: int


def apply_call(
    shard: int, epoch: int, events: Sequence[Event], settings: Settings
) -> Call[list[Result]]:
    """Apply `events` (all of `shard`) in order; one result each. Raises EpochRefused,
    having changed nothing, when the shard has seen a newer layout than `epoch`."""
    k = ShardKeys.of(shard)
    keys = [k.records, k.waiting, k.fired, k.retired, k.epoch, k.history]
    args: list[Arg] = [
        epoch,
        settings.level_multipliers[0],
        wake_channel(shard),
        settings.finished_retention_ms,
    ]
    args += [apply_arg(e, settings.timeout_interval_ms) for e in events]
    return Call(APPLY, keys, args, functools.partial(_results, events))


def _results(events: Sequence[Event], reply: list[Any]) -> list[Result]:
    """The script's flat reply (4 values an event) as results."""
    out: list[Result] = []
    for j, event in enumerate(events):
        status, gen, a, b = reply[4 * j : 4 * j + 4]
        if isinstance(event, AgentMessage):
            out.append(TrackResult(status, int(gen), int(a), b if b >= 0 else None))
        else:
            out.append(RespondResult(status, a if a >= 0 else None, int(gen)))
    return out


def apply_arg(event: Event, interval_ms: int) -> str:
    """One event as the apply script takes it (ids never hold '|': validation)."""
    if isinstance(event, AgentMessage):
        return (
            f"a|{event.conversation_id}|{event.agent_id}|{event.message_id}"
            f"|{event.timestamp_ms}|{event.timeout_ms or interval_ms}"
        )
    return f"c|{event.conversation_id}|{event.message_id}|{event.timestamp_ms}"


#: Events per script call: bounded so a call's arguments stay small and Redis stays responsive.
CALL_SIZE = 500
#: Times a batch is routed again after a shard refused the layout it was routed by.
REROUTES = 5


@dataclass(slots=True)
class _Call:
    """One planned script call: events of one shard, in arrival order."""

    shard: int
    indices: list[int]


def plan(events: Sequence[Event], indices: Sequence[int], layout: Layout) -> list[list[_Call]]:
    """Group events into script calls: per shard, in arrival order, CALL_SIZE a call; then
    into rounds of at most one call per shard. A round is one round trip, and a shard's next
    call waits for the round before: a call that must be run again (NOSCRIPT, a redirection)
    is, before any later event of its shard runs."""
    by_shard: dict[int, list[int]] = {}
    for index in indices:
        by_shard.setdefault(layout.shard(events[index].conversation_id), []).append(index)
    rounds: list[list[_Call]] = []
    for shard, members in by_shard.items():
        for n, start in enumerate(range(0, len(members), CALL_SIZE)):
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(_Call(shard, members[start : start + CALL_SIZE]))
    return rounds


class Store:
    """Applies agent messages and customer responses, one atomic script call per shard."""

    def __init__(
        self,
        redis: Client,
        settings: Settings,
        layout: LiveLayout | None = None,
        lane: AnyLane | None = None,
    ) -> None:
        self.redis = redis
        self.cluster = is_cluster(redis)
        self.lane = lane  # the event scripts' calls go by it when given
        self.settings = settings
        self.layout = layout or LiveLayout(redis, settings)
        self.pending: list[tuple[Event, asyncio.Future[Result]]] = []
        self.flushing: set[asyncio.Task[None]] = set()

    async def apply_many(self, events: Sequence[Event]) -> list[Result]:
        """Apply a batch: one script call per shard (CALL_SIZE events a call), in order.

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
            todo = refused.indices
            await self.layout.catch_up(refused.epoch)
        raise TryAgainError("the shard layout kept changing while applying a batch")

    async def _apply(
        self,
        events: Sequence[Event],
        todo: Sequence[int],
        layout: Layout,
        results: list[Result | None],
    ) -> Refused | None:
        """Apply events[todo] by `layout` into `results`; what was refused, or None."""
        if layout.previous is not None:
            try:
                await move(self.redis, layout, {events[i].conversation_id for i in todo})
            except EpochRefused as exc:
                return Refused(list(todo), exc.epoch)
        refused = Refused([], 0)
        closed: set[int] = set()  # shards that refused: their later calls are not sent
        for calls in plan(events, todo, layout):
            live: list[_Call] = []
            for call in calls:
                if call.shard in closed:
                    refused.indices += call.indices
                else:
                    live.append(call)
            if not live:
                continue
            script_calls = [
                apply_call(c.shard, layout.epoch, [events[i] for i in c.indices], self.settings)
                for c in live
            ]
            replies = await run_each(self.lane or self.redis, script_calls)
            for call, reply in zip(live, replies, strict=True):
                if isinstance(reply, EpochRefused):
                    closed.add(call.shard)
                    refused.indices += call.indices
                    refused.epoch = max(refused.epoch, reply.epoch)
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    for index, result in zip(call.indices, reply, strict=True):
                        results[index] = result
        return Refused(sorted(refused.indices), refused.epoch) if closed else None

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
            pipe.hget(k.fired, conversation_id)
            pipe.zscore(k.waiting, conversation_id)
            pipe.hget(k.moving, conversation_id)
            pipe.hget(k.history, conversation_id)
            if not self.cluster:  # a cluster pipeline holds one slot's keys only: TIME apart
                pipe.time()
            raw, fired, due, moving, history, *clock = await pipe.execute()
        now_ms = time_ms(clock[0]) if clock else await redis_time_ms(self.redis)
        if raw is None and moving is not None:  # taken out by a move in progress
            parts = moving.split("|", RECORD_FIELDS + 3)  # record|due|level|retire|history
            raw = "|".join(parts[:RECORD_FIELDS])
            due_s, fired = parts[RECORD_FIELDS], parts[RECORD_FIELDS + 1]
            due = float(due_s) if due_s else None
            history = parts[RECORD_FIELDS + 3] if len(parts) > RECORD_FIELDS + 3 else None
        if raw is None:
            return None
        view = _conversation(conversation_id, raw, fired or None, due)
        view = dataclasses.replace(view, history=tuple(parse_history(history)), now_ms=now_ms)
        return self._as_delivered(view, view.now_ms)

    def _as_delivered(self, view: Conversation, now_ms: int) -> Conversation:
        """The view as the receivers see it: a level the sweeper staged early (PREFETCH_MS)
        is not fired until its due time comes."""
        if not view.level_fired:
            return view
        offsets = self.settings.level_offsets_ms(view.timeout_ms)
        staged_due = view.waiting_since_ms + offsets[view.level_fired - 1]
        if staged_due <= now_ms:
            return view
        if view.state == "answered":  # answered before it was due: it never fires
            return dataclasses.replace(view, level_fired=view.level_fired - 1)
        return dataclasses.replace(
            view, state="waiting", level_fired=view.level_fired - 1, next_due_ms=staged_due
        )

    def levels(self, view: Conversation) -> list[Level]:
        """Each level of the current period: due, staged, delivered or pending, ..."""
        offsets = self.settings.level_offsets_ms(view.timeout_ms)
        answered = view.state == "answered"
        return levels(
            view.conversation_id,
            view.period,
            offsets,
            view.staged,
            answered,
            view.history,
            view.now_ms,
        )

    def timeline(self, view: Conversation) -> list[dict[str, Any]]:
        """The conversation's history as JSON items, oldest first."""
        answer = None
        if view.answered_at_ms is not None:
            answer = (view.answered_at_ms, view.response_time_ms or 0, view.answer_message_id or "")
        return timeline(
            view.conversation_id, view.period, answer, view.history, self.settings.level_offsets_ms
        )


def _conversation(
    conversation_id: str, raw: str, fired: str | None, due: float | None
) -> Conversation:
    r = Record.parse(raw)
    answered = r.state == "A"
    return Conversation(
        conversation_id=conversation_id,
        state=RECORD_STATES[r.state],
        generation=int(r.generation),
        waiting_since_ms=int(r.since_ms),
        timeout_ms=int(r.interval_ms),
        agent_id=r.agent_id,
        message_id=r.message_id,
        level_fired=int(fired or 0),
        next_due_ms=int(due) if due is not None else None,
        response_time_ms=int(r.response_ms) if r.response_ms else None,
        staged=int(fired or 0),
        answered_at_ms=int(r.newest_ms) if answered else None,
        answer_message_id=r.answer_message_id if answered else None,
    )
