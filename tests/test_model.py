"""Property test: random histories of agent messages and answers per conversation, delivered
out of order and with duplicates, interleaved with sweeps, produce exactly the
notifications a small reference model in plain Python says they should.

The real track, respond and sweep scripts run against a real Redis with explicit event
timestamps; the sweep runs by Redis's clock and returns it, and the model uses that same
``now``. The sweep needs its shard lease, taken with lease_acquire like the sweeper does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import redis as sync_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.redis_server import RedisServer
from tracker.delivery.notification import Notification
from tracker.model import AgentMessage, CustomerResponse
from tracker.model import Event as StoredEvent
from tracker.redis.keys import ShardKeys
from tracker.redis.scripts import LOADED, Call
from tracker.settings import Settings
from tracker.state.store import apply_call
from tracker.timing.lease import acquire_call
from tracker.timing.sweeper import sweep_call

INTERVAL = 1000
MULTIPLIERS = (1.0, 2.0, 3.0)
RETENTION = 10**9  # nothing retires during an example
K = ShardKeys.of(0)
POLICY = dataclasses.replace(
    Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1", "RUN_DIR": "var/unused"}),
    timeout_interval_ms=INTERVAL,
    level_multipliers=MULTIPLIERS,
    answered_retention_ms=RETENTION,
    history_retention_ms=RETENTION,
    prefetch_ms=0,
)
R = TypeVar("R")


# -- the reference model ------------------------------------------------------------------


@dataclass
class Conversation:
    generation: int
    since: int
    agent_message: str
    newest: int  # timestamp of the newest event applied
    answered_by: str | None = None
    fired: int = 0  # highest level notified in this generation
    seen: set[str] = field(default_factory=set)  # every message id applied, any generation


@dataclass
class Model:
    """What the contract says: the newest agent message starts a generation; a replay is a
    no-op; an event older than the newest applied one is ignored; an answer (not older than
    the clock's start) stops the clock; a sweep at ``now`` notifies each running clock of
    its highest level due and not yet notified, once."""

    conversations: dict[str, Conversation] = field(default_factory=dict)
    notified: list[tuple[str, int, int, int]] = field(default_factory=list)

    def agent(self, c: str, message: str, ts: int) -> str:
        conv = self.conversations.get(c)
        if conv is not None:
            if message in conv.seen:
                return "duplicate"
            if ts < conv.newest:
                return "stale"
        status = "restarted" if conv is not None and conv.answered_by is None else "started"
        generation = conv.generation + 1 if conv is not None else 1
        seen = (conv.seen if conv is not None else set()) | {message}
        self.conversations[c] = Conversation(generation, ts, message, ts, seen=seen)
        return status

    def answer(self, c: str, message: str, ts: int) -> str:
        conv = self.conversations.get(c)
        if conv is None:
            return "not_waiting"
        if message in conv.seen:
            return "duplicate"
        if conv.answered_by is not None:
            conv.seen.add(message)  # remembered: its retry after a restart is a duplicate
            return "not_waiting"
        if ts < conv.since:
            return "stale"
        conv.answered_by, conv.newest = message, ts
        conv.seen.add(message)
        return "answered"

    def sweep(self, now: int) -> None:
        for c, conv in self.conversations.items():
            if conv.answered_by is not None:
                continue
            due = [
                level
                for level, m in enumerate(MULTIPLIERS, 1)
                if level > conv.fired and conv.since + int(m * INTERVAL + 0.5) <= now
            ]
            if due:
                conv.fired = max(due)
                self.notified.append((c, conv.fired, conv.generation, conv.since))


# -- histories and their delivery ---------------------------------------------------------


@dataclass(frozen=True)
class Event:
    conversation: str
    kind: str  # agent | answer
    message: str
    offset_ms: int  # from the example's base time


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """Per conversation, events at non-decreasing times: what happened upstream."""
    events = []
    for n in range(draw(st.integers(1, 3))):
        c = f"c{n}"
        t = draw(st.integers(0, 4000))
        for k in range(draw(st.integers(1, 6))):
            t += draw(st.sampled_from([0, 1, 400, 999, 1000, 1500, 2000, 3000, 5000]))
            kind = draw(st.sampled_from(["agent", "agent", "answer"]))
            events.append(Event(c, kind, f"{kind[0]}{k}", t))
    return events


Step = Event | None  # None: a sweep


@st.composite
def deliveries(draw: st.DrawFn) -> list[Step]:
    """The history reordered, some events repeated, sweeps in between."""
    events = draw(histories())
    order: list[Step] = list(draw(st.permutations(events)))
    for _ in range(draw(st.integers(0, 4))):
        order.insert(draw(st.integers(0, len(order))), draw(st.sampled_from(events)))
    for _ in range(draw(st.integers(0, 5))):
        order.insert(draw(st.integers(0, len(order))), None)
    return order


# -- the test -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[sync_redis.Redis]:
    c = redis_server.client()
    yield c
    c.close()


def run(client: sync_redis.Redis, call: Call[R]) -> R:
    """A script call on the synchronous client (its scripts loaded first)."""
    return call.parse(client.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args))


def status(client: sync_redis.Redis, event: StoredEvent) -> str:
    """What applying `event` did (started, duplicate, stale, answered, ...)."""
    (result,) = run(client, apply_call(K.shard, 0, [event], POLICY))
    return result.status


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=deliveries())
def test_notifications_equal_the_reference_model(
    client: sync_redis.Redis, steps: list[Step]
) -> None:
    client.flushdb()
    for script in LOADED.values():
        client.script_load(script.source)
    lease = run(client, acquire_call(K.shard, "model", 600_000))
    assert lease is not None
    seconds, micros = client.time()
    # The clock sits inside the histories: some deadlines have passed, some have not.
    base = seconds * 1000 + micros // 1000 - 8000
    model = Model()
    for step in [*steps, None]:
        if step is None:
            # One call sweeps everything due (batch 1000), at one ``now`` the model shares.
            swept = run(client, sweep_call(K.shard, lease, POLICY, 1000))
            assert not swept.more
            model.sweep(swept.now_ms)
            continue
        ts = base + step.offset_ms
        event: StoredEvent
        if step.kind == "agent":
            event = AgentMessage(step.conversation, "agent", step.message, ts, INTERVAL)
            expected = model.agent(step.conversation, step.message, ts)
        else:
            event = CustomerResponse(step.conversation, "customer", step.message, ts)
            expected = model.answer(step.conversation, step.message, ts)
        applied = status(client, event)
        assert applied == expected, (step, applied, expected)
    entries: Any = client.xrange(K.outbox)
    notifications = [Notification.from_entry(0, i, f) for i, f in entries]
    got = [(n.conversation_id, n.level, n.generation, n.waiting_since_ms) for n in notifications]
    assert sorted(got) == sorted(model.notified)


# -- retries ------------------------------------------------------------------------------


@st.composite
def retried(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """A history sent in order, and the same with retries of earlier requests (the same
    bodies, timestamps included) inserted anywhere after their first sending. Each
    conversation starts with an agent message: a response for a conversation the tracker
    does not know is not remembered (no record is made for unknown conversations)."""
    sent = sorted(draw(histories()), key=lambda e: e.offset_ms)
    known: set[str] = set()
    for e in list(sent):
        if e.kind == "agent":
            known.add(e.conversation)
        elif e.conversation not in known:
            sent.remove(e)
    with_retries: list[Event] = []
    for i, event in enumerate(sent):
        with_retries.append(event)
        for _ in range(draw(st.integers(0, 2))):
            with_retries.append(draw(st.sampled_from(sent[: i + 1])))
    return sent, with_retries


def state(client: sync_redis.Redis) -> tuple[Any, ...]:
    """What the events left: records, deadlines, levels fired, retirements (who, not when:
    a retirement is timed by Redis's clock), history."""
    return (
        client.hgetall(K.records),
        client.zrange(K.waiting, 0, -1, withscores=True),
        client.hgetall(K.fired),
        sorted(client.zrange(K.retired, 0, -1)),
        client.hgetall(K.history),
    )


def replay(client: sync_redis.Redis, events: list[Event], base: int) -> list[str]:
    client.flushdb()
    statuses = []
    for e in events:
        ts = base + e.offset_ms
        stored: StoredEvent = (
            AgentMessage(e.conversation, "agent", e.message, ts, INTERVAL)
            if e.kind == "agent"
            else CustomerResponse(e.conversation, "customer", e.message, ts)
        )
        statuses.append(status(client, stored))
    return statuses


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(histories=retried())
def test_retries_of_earlier_requests_change_nothing(
    client: sync_redis.Redis, histories: tuple[list[Event], list[Event]]
) -> None:
    """Guarantee 7: a client that retries requests it already sent (after a 503 whose
    request had in fact been applied, say) leaves the same state as one that did not, and
    a retry of a request that was applied answers duplicate."""
    sent, with_retries = histories
    client.script_load(apply_call(K.shard, 0, [], POLICY).script.source)
    seconds, _ = client.time()
    base = seconds * 1000 - 60_000  # fixed times: nothing depends on the clock
    replay(client, sent, base)
    once = state(client)
    statuses = replay(client, with_retries, base)
    assert state(client) == once
    applied: set[Event] = set()
    for event, status in zip(with_retries, statuses, strict=True):
        if event in applied:
            assert status == "duplicate", (event, status)
        if status in ("started", "restarted", "answered"):
            applied.add(event)
