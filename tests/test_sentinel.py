"""Sentinel mode: the tracker follows a failover of its master."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.processes import Stack, post_events, running
from tests.support.receiver import Receiver
from tests.support.redis_cluster import SentinelSetup
from tests.support.waiting import wait_http, wait_until
from tracker.redis.keys import PODS

pytestmark = pytest.mark.slow


async def test_the_tracker_carries_on_through_a_sentinel_failover(tmp_path: Path) -> None:
    setup = SentinelSetup(tmp_path / "redis")
    setup.start()
    receiver = Receiver()
    settings = {
        "REDIS_MODE": "sentinel",
        "REDIS_SENTINEL_MASTER": "mymaster",
        "MODE": "phase2",
        "SHARD_COUNT": "4",
        "CONSUMER_PROCESSES": "1",
        "TIMEOUT_INTERVAL_MS": "5000",
        "LEADER_ELECTION_TTL": "2",
        "POD_ID": "sentinel-pod",
    }
    roles = ["api", "sweeper", ("sweeper", "sentinel-pod-b"), "consumer --index 0"]
    try:
        async with running(setup.url, tmp_path, roles, receiver=receiver, env=settings) as stack:
            await carry_on(setup, stack, receiver)
    finally:
        setup.stop()


async def carry_on(setup: SentinelSetup, stack: Stack, receiver: Receiver) -> None:
    """Deliver through a failover that takes the master and the first sweeper down."""
    _, first, second, _ = stack.roles
    base = stack.base
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
    await wait_until(lambda: master.zcard(PODS) == 2, timeout=30)
    old_port = setup.master.port
    # The master and the first sweeper die together; the second sweeper takes its shards
    # on the new master and must first let one lease TTL pass.
    setup.master.kill(signal.SIGKILL)
    first.kill()
    await wait_until(lambda: setup.current_master_port() != old_port, timeout=30)
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
            {(r.event["conversation_id"], r.event["level"]) for r in receiver.events} >= expected
        ),
        timeout=40,
    )
    got = {(r.event["conversation_id"], r.event["level"]) for r in receiver.events}
    print(
        f"\nsentinel failover: master {old_port} -> {setup.current_master_port()},"
        f" {len(expected - got)} of {len(expected)} expected notifications lost"
    )
    assert expected <= got
    assert "taken after a failover" in second.output()
