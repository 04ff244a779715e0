"""A pod with a webhook receiver, and a bounded load of agent messages and answers that
remembers what the API acknowledged, so a test can say which notifications must arrive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

from tests.support import reliability
from tests.support.faults import FAST, program_pids, program_states
from tests.support.processes import Pod, running
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until
from tracker.timefmt import parse_rfc3339_ms


@contextlib.asynccontextmanager
async def pod_with_receiver(
    redis_url: str, tmp_path: Path, *, name: str = "pod-f", **env: str
) -> AsyncIterator[tuple[Pod, Receiver]]:
    """A pod with FAST timings and `env`, delivering to a local webhook receiver."""
    async with webhook_pod(redis_url, tmp_path, name, {**FAST, **env}) as pod_and_receiver:
        yield pod_and_receiver


@contextlib.asynccontextmanager
async def webhook_pod(
    redis_url: str, tmp_path: Path, name: str, env: dict[str, str]
) -> AsyncIterator[tuple[Pod, Receiver]]:
    """A pod delivering to a local webhook receiver, with `env` on top of the shipped
    defaults (``env={}``: the defaults themselves)."""
    receiver = Receiver()
    settings = {"MODE": "phase2", "CONSUMER_PROCESSES": "2", **env}
    async with running(
        redis_url, tmp_path, pods=[name], receiver=receiver, check_logs=False, env=settings
    ) as stack:
        yield stack.pods[0], receiver


def assert_healthy(pod: Pod, pids: dict[str, int]) -> None:
    """Every program still RUNNING under supervisord, none restarted, no stack trace."""
    states = program_states(pod)
    states.pop("redis", None)  # not started: REDIS_URL points at the test's own server
    assert set(states.values()) == {"RUNNING"}, states
    assert program_pids(pod) == pids, "a program was restarted"


def pairs(receiver: Receiver) -> list[tuple[str, int]]:
    return [(r.event["conversation_id"], r.event["level"]) for r in receiver.events]


class Settled(NamedTuple):
    row: reliability.Row
    must: set[reliability.Pair]  # what had to arrive
    may: set[reliability.Pair]  # what could arrive or not, by the fault's timing


async def tally_settled(
    fault: str,
    conversations: int,
    load: Load,
    receiver: Receiver,
    *,
    also: set[reliability.Pair] | None = None,
    timeout: float,
    quiet_s: float,
    fault_end_ms: int | None = None,
    settings: str = "tuned",
) -> Settled:
    """Wait until everything that must arrive (the load's, and `also`) has, then `quiet_s`
    more for anything stale to show up; check none arrived before its due time (levels are
    staged ahead, PREFETCH_MS); add the run's row to the reliability report."""
    must, may = load.expected()
    must |= also or set()
    # Not arrived in time: the row counts the loss, and the caller's assertion says where
    # the lost ones are.
    with contextlib.suppress(TimeoutError):
        await wait_until(lambda: set(pairs(receiver)) >= must, timeout=timeout)
    await asyncio.sleep(quiet_s)
    row = tally_arrivals(fault, conversations, must, may, receiver, fault_end_ms, settings)
    return Settled(row, must, may)


def tally_arrivals(
    fault: str,
    conversations: int,
    must: set[reliability.Pair],
    may: set[reliability.Pair],
    receiver: Receiver,
    fault_end_ms: int | None,
    settings: str,
) -> reliability.Row:
    """Check that nothing arrived before its due time (levels are staged ahead,
    PREFETCH_MS) and add the run's row to the reliability report."""
    lateness = receiver.lateness_ms()
    assert not lateness or lateness[0] >= 0, f"one arrived {-lateness[0]} ms before it was due"
    return reliability.tally(
        fault,
        conversations,
        must,
        pairs(receiver),
        lateness,
        allowed=may,
        arrivals=receiver.arrivals(),
        fault_end_ms=fault_end_ms,
        settings=settings,
    )


@dataclass
class Load:
    """Agent messages (and a reply for every third conversation), one request at a time
    per worker; remembers which writes the API acknowledged with 200."""

    base: str
    prefix: str
    offsets_ms: tuple[int, int, int]  # of the levels, from the pod's interval and multipliers
    acked_agent: dict[str, int] = field(default_factory=dict)  # id -> waiting since ms
    acked_reply: dict[str, int] = field(default_factory=dict)  # id -> answered at ms
    unacked: set[str] = field(default_factory=set)
    statuses: list[int] = field(default_factory=list)
    missing_retry_after: int = 0

    async def post(self, session: aiohttp.ClientSession, path: str, body: Any) -> Any:
        try:
            async with session.post(f"{self.base}{path}", json=body) as resp:
                self.statuses.append(resp.status)
                if resp.status == 503 and "Retry-After" not in resp.headers:
                    self.missing_retry_after += 1
                return await resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            self.statuses.append(0)
            return None

    async def worker(
        self, index: int, count: int, pause_s: float, late_answer_s: float | None = None
    ) -> None:
        """`count` conversations, one every `pause_s`: every third answered at once; with
        `late_answer_s`, another third answered that long after its agent message."""
        timeout = aiohttp.ClientTimeout(total=30)
        late: list[asyncio.Task[None]] = []
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for i in range(count):
                c = f"{self.prefix}-{index}-{i}"
                body = {"agent_id": "agent-1", "message_id": f"m-{c}"}
                got = await self.post(session, f"/conversations/{c}/agent-message", body)
                if got is None:
                    self.unacked.add(c)
                else:
                    self.acked_agent[c] = parse_rfc3339_ms(got["waiting_since"])
                    if i % 3 == 0:
                        await self.answer(session, c)
                    elif i % 3 == 1 and late_answer_s is not None:
                        late.append(asyncio.create_task(self.answer(session, c, late_answer_s)))
                await asyncio.sleep(pause_s)
            await asyncio.gather(*late)

    async def answer(self, session: aiohttp.ClientSession, c: str, after_s: float = 0) -> None:
        await asyncio.sleep(after_s)
        body = {"customer_id": "customer-1", "message_id": f"r-{c}"}
        got = await self.post(session, f"/conversations/{c}/customer-response", body)
        if got is None:
            self.unacked.add(c)
        elif got["status"] == "answered":
            self.acked_reply[c] = self.acked_agent[c] + int(got["response_time_ms"])

    def expected(self) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
        """(must arrive, may arrive): every level of every acknowledged, unanswered
        conversation must; a level due before an acknowledged answer may; so may anything
        of a conversation whose outcome a failed request left unknown."""
        must, may = set(), set()
        for c, since in self.acked_agent.items():
            for level, offset in zip((1, 2, 3), self.offsets_ms, strict=True):
                if c in self.unacked:
                    may.add((c, level))
                elif c not in self.acked_reply:
                    must.add((c, level))
                elif since + offset <= self.acked_reply[c]:
                    may.add((c, level))
        for c in self.unacked - set(self.acked_agent):
            may |= {(c, level) for level in (1, 2, 3)}
        return must, may
