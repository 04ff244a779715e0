"""Phase 1 end to end: the API and a sweeper as real processes, a real webhook receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import Receiver, Role, percentile, post_events, role_env, wait_http, wait_until
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.slow

CONVERSATIONS = 200


async def test_phase1_escalates_unanswered_and_suppresses_answered(
    redis_server: RedisServer, redis_sync: object, tmp_path: Path
) -> None:
    receiver = Receiver()
    await receiver.start()
    port = free_port()
    env = role_env(
        redis_server.url,
        tmp_path / "run",
        MODE="phase1",
        PORT=str(port),
        POD_ID="e2e-1",
        TIMEOUT_INTERVAL_MS="300",
        CHECK_INTERVAL_MS="1000",
        NOTIFY_SINK="webhook",
        NOTIFY_WEBHOOK_URL=receiver.url,
        NOTIFY_WEBHOOK_SECRET=receiver.secret,
    )
    api = Role(["api"], env, tmp_path / "api.log")
    sweeper = Role(["sweeper"], env, tmp_path / "sweeper.log")
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/ready")
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
        await wait_until(lambda: False, timeout=1.0)  # anything late or stale would show now
        got = {c: sorted(levels) for c, levels in receiver.by_conversation().items()}
        assert got == expected
        assert receiver.bad_signatures == 0
        late = receiver.lateness_ms()
        print(
            f"\nphase1 lateness ms over {len(late)} notifications:"
            f" p50={percentile(late, 0.5)} p99={percentile(late, 0.99)} max={late[-1]}"
        )
    finally:
        sweeper.stop()
        api.stop()
        await receiver.stop()
    assert "Traceback" not in api.output() + sweeper.output()
