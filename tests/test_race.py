"""Guarantee 2 under a real race: a customer's answer timestamped exactly at the deadline,
sent while the sweeper fires that deadline and the consumer re-checks it, 10,000 times.

The real scripts run against a real Redis from two connections at once: one answers
(respond), the other sweeps (sweep) and re-checks each fired entry before "sending"
(recheck), as the consumer does. Each script call runs inside MULTI with an INCR of one
counter, so its commit order is known exactly.

"Acknowledged" means: the respond script committed and answered ``answered`` (what the
API turns into its 200). "Sent" means: the recheck script said SEND for that entry. The
answer wins every race it can win: once acknowledged, no later re-check says SEND, and a
sweep after it fires nothing. A SEND is only possible when the re-check committed before
the answer, i.e. the answer reached Redis after the notification was decided.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.support import reliability
from tests.support.redis_server import RedisServer
from tracker.delivery.ledger import Verdict, recheck_call
from tracker.delivery.notification import Notification
from tracker.model import AgentMessage, CustomerResponse
from tracker.redis.keys import ShardKeys
from tracker.redis.scripts import LOADED, Call, run, run_all
from tracker.settings import Settings
from tracker.state.store import apply_call
from tracker.timing.lease import acquire_call
from tracker.timing.sweeper import sweep_call

pytestmark = pytest.mark.slow

ROUNDS, PER_ROUND = 100, 100
INTERVAL = 1000
SEND, STALE = Verdict.SEND, Verdict.STALE
SEQ = "race:seq"
R = TypeVar("R")
K = ShardKeys.of(0)


async def committed(client: Redis, call: Call[R]) -> tuple[int, R]:
    """Run one script call inside MULTI with INCR of the sequence: (commit order, result)."""
    async with client.pipeline(transaction=True) as tx:
        tx.incr(SEQ)
        tx.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        seq, reply = await tx.execute()
    return int(seq), call.parse(reply)


@dataclass
class Trial:
    reply_seq: int = 0
    reply_status: str = ""
    fired_seq: int | None = None  # the sweep call that fired level 1
    recheck_seq: int | None = None
    recheck_code: int | None = None


@dataclass
class Round:
    ids: list[str]
    last_entry: str  # the stream's last entry before this round
    trials: dict[str, Trial] = field(default_factory=dict)
    replies_done: bool = False


async def answer_all(client: Redis, settings: Settings, r: Round, due: int) -> None:
    order = r.ids[:]
    random.shuffle(order)

    async def answer(ids: list[str]) -> None:
        for c in ids:
            if random.random() < 0.5:
                await asyncio.sleep(0)
            event = CustomerResponse(c, "customer", f"r-{c}", due)
            seq, (result,) = await committed(client, apply_call(0, 0, [event], settings))
            r.trials[c].reply_seq, r.trials[c].reply_status = seq, result.status

    await asyncio.gather(*(answer(order[i::4]) for i in range(4)))
    r.replies_done = True


async def sweep_and_recheck(client: Redis, settings: Settings, r: Round, lease: str) -> None:
    last_id = r.last_entry
    while True:
        seq, swept = await committed(client, sweep_call(0, lease, settings, batch=10))
        entries: Any = await client.xrange(K.outbox, f"({last_id}", "+")
        for entry_id, fields in entries:
            last_id = entry_id
            n = Notification.from_entry(0, entry_id, fields)
            c = n.conversation_id
            r.trials[c].fired_seq = seq
            call = recheck_call(0, [n], settings.level_multipliers)
            rseq, rechecked = await committed(client, call)
            r.trials[c].recheck_seq, r.trials[c].recheck_code = rseq, rechecked.verdicts[0]
        if r.replies_done and not swept.fired and not swept.more:
            r.last_entry = last_id
            return
        await asyncio.sleep(0)


async def test_an_answer_at_the_deadline_never_loses_to_the_sweeper(
    redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_server.url, tmp_path / "run", TIMEOUT_INTERVAL_MS=str(INTERVAL), PREFETCH_MS="0"
    )
    for script in LOADED.values():  # MULTI runs EVALSHA: no fallback to EVAL inside it
        await redis.script_load(script.source)
    sweeper = Redis.from_url(redis_server.url, decode_responses=True)
    lease = await run(redis, acquire_call(0, "race", 600_000))
    assert lease is not None
    outcomes = {"answer first": 0, "suppressed by re-check": 0, "sent, answer after": 0}
    violations: list[str] = []
    last_entry = "0-0"
    try:
        for n in range(ROUNDS):
            r = Round([f"race-{n}-{i}" for i in range(PER_ROUND)], last_entry)
            seconds, micros = await redis.time()
            due = int(seconds) * 1000 + int(micros) // 1000 - 5  # due now, by Redis's clock
            starts = []
            for c in r.ids:
                r.trials[c] = Trial()
                message = AgentMessage(c, "agent", f"m-{c}", due - INTERVAL, INTERVAL)
                starts.append(apply_call(0, 0, [message], settings))
            await run_all(redis, starts)
            await asyncio.gather(
                answer_all(redis, settings, r, due),
                sweep_and_recheck(sweeper, settings, r, lease),
            )
            last_entry = r.last_entry
            for c, t in r.trials.items():
                violations += check(c, t)
                if t.fired_seq is None:
                    outcomes["answer first"] += 1
                elif t.recheck_code == STALE:
                    outcomes["suppressed by re-check"] += 1
                else:
                    outcomes["sent, answer after"] += 1
    finally:
        await sweeper.aclose()
    print(f"\n{ROUNDS * PER_ROUND} races: {outcomes}")
    sent = outcomes["sent, answer after"]
    # Expected notifications: those decided before the answer reached Redis.
    reliability.ROWS.append(
        reliability.Row(
            "answer exactly at the deadline, 10,000 races (scripts)",
            "scripts",
            ROUNDS * PER_ROUND,
            sent,
            sent,
            0,
            0,
            len(violations),
            None,
        )
    )
    assert not violations, violations[:10]
    assert outcomes["answer first"] > 0
    assert outcomes["suppressed by re-check"] + sent > 0, "the sweeper never got there first"


def check(c: str, t: Trial) -> list[str]:
    out = []
    if t.reply_status != "answered":
        out.append(f"{c}: an answer at the deadline was not accepted: {t.reply_status}")
    if t.fired_seq is not None and t.fired_seq > t.reply_seq:
        out.append(f"{c}: fired by a sweep that committed after the answer")
    if t.fired_seq is not None and t.recheck_seq is None:
        out.append(f"{c}: fired but never re-checked")
    if t.recheck_seq is not None:
        acknowledged_first = t.reply_seq < t.recheck_seq
        if acknowledged_first and t.recheck_code == SEND:
            out.append(f"{c}: answer acknowledged and notification sent")
        if not acknowledged_first and t.recheck_code != SEND:
            out.append(f"{c}: suppressed before the answer existed")
    return out
