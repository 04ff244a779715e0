"""Sentinel mode: the tracker follows a failover of its master."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.processes import Receiver, Role, post_events, role_env, wait_http, wait_until
from tests.redis_cluster import SentinelSetup
from tests.redis_server import free_port
from tracker.redis.keys import PODS

pytestmark = pytest.mark.slow


async def test_the_tracker_carries_on_through_a_sentinel_failover(tmp_path: Path) -> None:
    setup = SentinelSetup(tmp_path / "redis")
    setup.start()
    receiver = Receiver()
    await receiver.start()
    port = free_port()
    env = role_env(
        setup.url,
        tmp_path / "run",
        REDIS_MODE="sentinel",
        REDIS_SENTINEL_MASTER="mymaster",
        MODE="phase2",
        SHARD_COUNT="4",
        CONSUMER_PROCESSES="1",
        TIMEOUT_INTERVAL_MS="5000",
        LEADER_ELECTION_TTL="2",
        NOTIFY_SINK="webhook",
        NOTIFY_WEBHOOK_URL=receiver.url,
        NOTIFY_WEBHOOK_SECRET=receiver.secret,
        POD_ID="sentinel-pod",
        PORT=str(port),
    )
    roles = [
        Role(["api"], env, tmp_path / "api.log"),
        Role(["sweeper"], env, tmp_path / "sweeper.log"),
        Role(["sweeper"], {**env, "POD_ID": "sentinel-pod-b"}, tmp_path / "sweeper-b.log"),
        Role(["consumer", "--index", "0"], env, tmp_path / "consumer.log"),
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/ready", timeout=30)
        before = [f"s-{i}" for i in range(100)]
        await post_events(
            base,
            [
                {"type": "agent_message", "conversation_id": c, "agent_id": "a", "message_id": "m"}
                for c in before
            ],
        )
        setup.wait_replica_synced(setup.replica)
        # Both sweepers have seen this master (a sweeper notes the server, then registers):
        # the second cannot tell a failover from its own start otherwise.
        master = setup.master.client()
        assert await wait_until(lambda: master.zcard(PODS) == 2, timeout=30)
        old_port = setup.master.port
        # The master and the first sweeper die together; the second sweeper takes its shards
        # on the new master and must first let one lease TTL pass.
        setup.master.kill(signal.SIGKILL)
        roles[1].signal(signal.SIGKILL)
        assert await wait_until(lambda: setup.current_master_port() != old_port, timeout=30)
        await wait_http(f"{base}/ready", timeout=30)
        after = [f"t-{i}" for i in range(100)]
        await post_events(
            base,
            [
                {"type": "agent_message", "conversation_id": c, "agent_id": "a", "message_id": "m"}
                for c in after
            ],
        )
        # Levels 2 and 3 of the first batch fall due after the failover; all of the second.
        expected = {(c, lvl) for c in before for lvl in (2, 3)}
        expected |= {(c, lvl) for c in after for lvl in (1, 2, 3)}
        await wait_until(
            lambda: (
                {(r.event["conversation_id"], r.event["level"]) for r in receiver.events}
                >= expected
            ),
            timeout=40,
        )
        got = {(r.event["conversation_id"], r.event["level"]) for r in receiver.events}
        print(
            f"\nsentinel failover: master {old_port} -> {setup.current_master_port()},"
            f" {len(expected - got)} of {len(expected)} expected notifications lost"
        )
        assert expected <= got
        assert "taken after a failover" in roles[2].output()
    finally:
        for role in roles:
            role.stop()
        await receiver.stop()
        setup.stop()
    for role in roles:
        assert "Traceback" not in role.output(), role.output()[-3000:]
