"""`make demo-multi`: two pods side by side on one Redis; the leading sweeper stops;
the other pod takes its shards and the notifications still arrive."""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import tempfile
from pathlib import Path

import redis as sync_redis

from tests.support.processes import Pod, post_events
from tests.support.receiver import Receiver
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_http, wait_until
from tracker.redis.keys import ShardKeys
from tracker.timefmt import parse_rfc3339_ms

SHARDS = 8


def holders(client: sync_redis.Redis) -> dict[int, str]:
    return {n: str(client.get(ShardKeys.of(n).leader) or "-").split("|")[0] for n in range(SHARDS)}


def show(title: str, client: sync_redis.Redis) -> None:
    h = holders(client)
    count = collections.Counter(h.values())
    print(f"{title}: " + ", ".join(f"{pod} leads {n} shards" for pod, n in sorted(count.items())))
    print("   " + " ".join(f"{{{s}}}={p}" for s, p in h.items()))


async def demo(workdir: Path) -> None:
    server = None
    url = os.environ.get("REDIS_URL", "")
    if not url:
        server = RedisServer(workdir / "redis", appendonly=True)
        server.start()
        url = server.url
    client = sync_redis.Redis.from_url(url, decode_responses=True)
    receiver = Receiver()
    await receiver.start()
    settings = {
        "SHARD_COUNT": str(SHARDS),
        "CONSUMER_PROCESSES": "2",
        "TIMEOUT_INTERVAL_MS": "1500",
        "LEADER_ELECTION_TTL": "3",
        "NOTIFY_SINK": "webhook,log",
        "NOTIFY_WEBHOOK_URL": receiver.url,
        "NOTIFY_WEBHOOK_SECRET": receiver.secret,
    }
    pods = [Pod(name, url, workdir, **settings) for name in ("pod-a", "pod-b")]
    try:
        for pod in pods:
            await wait_http(f"{pod.base}/ready", timeout=30)
        await wait_until(
            lambda: sorted(collections.Counter(holders(client).values()).values()) == [4, 4],
            timeout=20,
        )
        show("before", client)
        ids = [f"demo-{i}" for i in range(6)]
        await post_events(
            pods[0].base,
            [
                {
                    "type": "agent_message",
                    "conversation_id": c,
                    "agent_id": "agent-1",
                    "message_id": f"m-{c}",
                }
                for c in ids
            ],
        )
        print(f"started {len(ids)} conversations (levels due after 1.5 s, 3 s, 4.5 s)")
        print(pods[0].ctl("stop", "sweeper").strip() + "  (pod-a leaves the leader race)")
        await wait_until(lambda: set(holders(client).values()) == {"pod-b"}, timeout=20)
        show("after ", client)
        await wait_until(lambda: len(receiver.events) >= 3 * len(ids), timeout=20)
        print(f"notifications received by the webhook: {len(receiver.events)}")
        for r in sorted(
            receiver.events, key=lambda r: (r.event["conversation_id"], r.event["level"])
        ):
            e = r.event
            late = r.received_ms - parse_rfc3339_ms(e["due_at"])
            print(f"  {e['conversation_id']} level {e['level']} due {e['due_at']}  late {late} ms")
    finally:
        for pod in pods:
            pod.stop()
        await receiver.stop()
        if server is not None:
            server.stop()


def main() -> int:
    base = Path("var")
    base.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="demo-", dir=base) as workdir:
        asyncio.run(demo(Path(workdir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
