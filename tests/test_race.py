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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from tests import reliability
from tests.redis_server import RedisServer
from tracker.delivery.notification import Notification
from tracker.redis.keys import ShardKeys, wake_channel
from tracker.redis.scripts import Arg, Script, Scripts
from tracker.state.store import AgentMessage, CustomerResponse, apply_arg

pytestmark = pytest.mark.slow

ROUNDS, PER_ROUND = 100, 100
INTERVAL = 1000
SEND, STALE = 1, 0
SEQ = "race:seq"
K = ShardKeys.of(0)


async def committed(
    client: Redis, script: Script, keys: Sequence[str], args: Sequence[Arg]
) -> tuple[int, Any]:
    """Run one script inside MULTI with INCR of the sequence: (commit order, result)."""
    async with client.pipeline(transaction=True) as tx:
        tx.incr(SEQ)
        tx.evalsha(script.sha, len(keys), *keys, *args)
        seq, result = await tx.execute()
    return int(seq), result


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


async def answer_all(client: Redis, scripts: Scripts, r: Round, due: int) -> None:
    order = r.ids[:]
    random.shuffle(order)

    async def answer(ids: list[str]) -> None:
        for c in ids:
            if random.random() < 0.5:
                await asyncio.sleep(0)
            event = CustomerResponse(c, "customer", f"r-{c}", due)
            seq, (status, _, _, _) = await committed(
                client,
                scripts.apply,
                K.for_apply,
                [0, 1, wake_channel(0), 60_000, apply_arg(event, INTERVAL)],
            )
            r.trials[c].reply_seq, r.trials[c].reply_status = seq, str(status)

    await asyncio.gather(*(answer(order[i::4]) for i in range(4)))
    r.replies_done = True


async def sweep_and_recheck(client: Redis, scripts: Scripts, r: Round, lease: str) -> None:
    last_id = r.last_entry
    while True:
        seq, (fired, _, _, more) = await committed(
            client, scripts.sweep, K.for_sweep, [lease, 10, 1, 2, 3, 60_000]
        )
        entries: Any = await client.xrange(K.events, f"({last_id}", "+")
        for entry_id, fields in entries:
            last_id = entry_id
            n = Notification.from_entry(0, entry_id, fields)
            c = n.conversation_id
            r.trials[c].fired_seq = seq
            args: list[Arg] = [1, 2, 3, n.recheck_arg]
            rseq, codes = await committed(client, scripts.recheck, K.for_recheck, args)
            r.trials[c].recheck_seq, r.trials[c].recheck_code = rseq, int(codes[0])
        if r.replies_done and not int(fired) and not int(more):
            r.last_entry = last_id
            return
        await asyncio.sleep(0)


async def test_an_answer_at_the_deadline_never_loses_to_the_sweeper(
    redis_server: RedisServer, redis: Redis
) -> None:
    scripts = Scripts()
    for script in scripts.all():
        await redis.script_load(script.source)
    sweeper = Redis.from_url(redis_server.url, decode_responses=True)
    _, lease = await scripts.lease_acquire.run(redis, K.for_lease, ["race", 600_000])
    outcomes = {"answer first": 0, "suppressed by re-check": 0, "sent, answer after": 0}
    violations: list[str] = []
    last_entry = "0-0"
    try:
        for n in range(ROUNDS):
            r = Round([f"race-{n}-{i}" for i in range(PER_ROUND)], last_entry)
            seconds, micros = await redis.time()
            due = int(seconds) * 1000 + int(micros) // 1000 - 5  # due now, by Redis's clock
            async with redis.pipeline(transaction=False) as pipe:
                for c in r.ids:
                    r.trials[c] = Trial()
                    message = AgentMessage(c, "agent", f"m-{c}", due - INTERVAL, INTERVAL)
                    args: list[Arg] = [0, 1, wake_channel(0), 60_000, apply_arg(message, INTERVAL)]
                    pipe.execute_command(*scripts.apply.command(K.for_apply, args))
                await pipe.execute()
            await asyncio.gather(
                answer_all(redis, scripts, r, due), sweep_and_recheck(sweeper, scripts, r, lease)
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
