"""Phase 1 end to end: the API and a sweeper as real processes, a real webhook receiver."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis as sync_redis

from tests.support.faults import settled
from tests.support.processes import percentile, post_events, running
from tests.support.receiver import Receiver
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

CONVERSATIONS = 200


async def test_phase1_escalates_unanswered_and_suppresses_answered(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    receiver = Receiver()
    env = {
        "MODE": "phase1",
        "POD_ID": "e2e-1",
        "TIMEOUT_INTERVAL_MS": "300",
        "CHECK_INTERVAL_MS": "1000",
    }
    async with running(
        redis_server.url, tmp_path, ["api", "sweeper"], receiver=receiver, env=env
    ) as stack:
        base = stack.base
        ids = [f"conv-{i}" for i in range(CONVERSATIONS)]
        answered = set(ids[::2])
        starts = [
            {
                "type": "agent_message",
                "conversation_id": c,
                "agent_id": "agent-1",
                "message_id": f"m-{c}",
            }
            for c in ids
        ]
        replies = [
            {
                "type": "customer_response",
                "conversation_id": c,
                "customer_id": "cust-1",
                "message_id": f"r-{c}",
            }
            for c in sorted(answered)
        ]
        results = await post_events(base, starts + replies, chunk=len(starts) + len(replies))
        assert all(r["status"] == "ok" for r in results)
        assert [r["result"]["status"] for r in results[CONVERSATIONS:]] == ["answered"] * len(
            answered
        )
        expected = {c: [1, 2, 3] for c in ids if c not in answered}
        await wait_until(lambda: len(receiver.events) >= 3 * len(expected), timeout=15)
        # every level fired and every entry acknowledged: anything stale would be here now
        await wait_until(lambda: settled(redis_sync), timeout=10)
        got = {c: sorted(levels) for c, levels in receiver.by_conversation().items()}
        assert got == expected
        assert receiver.bad_signatures == 0
        late = receiver.lateness_ms()
        print(
            f"\nphase1 lateness ms over {len(late)} notifications:"
            f" p50={percentile(late, 0.5)} p99={percentile(late, 0.99)} max={late[-1]}"
        )
