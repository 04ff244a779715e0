"""Property test: random histories of agent messages and answers per conversation, delivered
out of order and with duplicates, interleaved with sweeps, produce exactly the
notifications a small reference model in plain Python says they should.

The real track, respond and sweep scripts run against a real Redis with explicit event
timestamps; the sweep runs by Redis's clock and returns it, and the model uses that same
``now``. The sweep needs its shard lease, taken with lease_acquire like the sweeper does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis as sync_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.redis_server import RedisServer
from tracker.events import Notification
from tracker.keys import ShardKeys, wake_channel
from tracker.scripts import Scripts
from tracker.store import respond_arg, track_arg

INTERVAL = 1000
MULTIPLIERS = (1.0, 2.0, 3.0)
RETENTION = 10**9  # nothing retires during an example
K = ShardKeys.of(0)


# -- the reference model ------------------------------------------------------------------


@dataclass
class Conversation:
    generation: int
    since: int
    agent_message: str
    newest: int  # timestamp of the newest event applied
    answered_by: str | None = None
    fired: int = 0  # highest level notified in this generation


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
            if conv.agent_message == message:
                return "duplicate"
            if ts < conv.newest:
                return "stale"
        status = "restarted" if conv is not None and conv.answered_by is None else "started"
        generation = conv.generation + 1 if conv is not None else 1
        self.conversations[c] = Conversation(generation, ts, message, ts)
        return status

    def answer(self, c: str, message: str, ts: int) -> str:
        conv = self.conversations.get(c)
        if conv is None:
            return "not_waiting"
        if conv.answered_by is not None:
            return "duplicate" if conv.answered_by == message else "not_waiting"
        if ts < conv.since:
            return "stale"
        conv.answered_by, conv.newest = message, ts
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


SCRIPTS = Scripts()


def run(client: sync_redis.Redis, script: Any, keys: list[str], args: list[Any]) -> Any:
    return client.evalsha(script.sha, len(keys), *keys, *args)


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
    for script in SCRIPTS.all():
        client.script_load(script.source)
    _, lease = run(client, SCRIPTS.lease_acquire, K.for_lease, ["model", 600_000])
    seconds, micros = client.time()
    # The clock sits inside the histories: some deadlines have passed, some have not.
    base = seconds * 1000 + micros // 1000 - 8000
    model = Model()
    for step in [*steps, None]:
        if step is None:
            # One call sweeps everything due (batch 1000), at one ``now`` the model shares.
            _, _, now, more = run(
                client, SCRIPTS.sweep, K.for_sweep, [lease, 1000, *MULTIPLIERS, RETENTION]
            )
            assert not int(more)
            model.sweep(int(now))
            continue
        ts = base + step.offset_ms
        if step.kind == "agent":
            args = [
                0,
                1.0,
                wake_channel(0),
                track_arg(step.conversation, "agent", step.message, ts, INTERVAL),
            ]
            status = run(client, SCRIPTS.track, K.for_writes, args)[0]
            expected = model.agent(step.conversation, step.message, ts)
        else:
            args = [0, RETENTION, respond_arg(step.conversation, step.message, ts)]
            status = run(client, SCRIPTS.respond, K.for_writes, args)[0]
            expected = model.answer(step.conversation, step.message, ts)
        assert status == expected, (step, status, expected)
    entries: Any = client.xrange(K.events)
    notifications = [Notification.from_entry(0, i, f) for i, f in entries]
    got = [(n.conversation_id, n.level, n.generation, n.waiting_since_ms) for n in notifications]
    assert sorted(got) == sorted(model.notified)
