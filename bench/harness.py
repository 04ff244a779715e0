"""Shared pieces of the benchmarks: settings, event batches, tracker processes, Redis stats."""

from __future__ import annotations

import asyncio
import bisect
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.processes import Role, role_env
from tracker.model import AgentMessage, CustomerResponse, Event
from tracker.redis.connection import Client
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys
from tracker.settings import Settings
from tracker.state.store import Store

BENCH_DIR = Path(__file__).parent
CHUNK = 1000  # events per Store.apply_many call and per POST /events (the API's MAX_BATCH)
IN_FLIGHT = 4  # concurrent batches


def settings_for(redis_url: str, run_dir: Path, **env: str) -> Settings:
    return Settings.from_env(
        {"REDIS_URL": redis_url, "RUN_DIR": str(run_dir), "POD_ID": "bench", **env}
    )


def starts(prefix: str, n: int, timestamps: Sequence[int] | None = None) -> list[AgentMessage]:
    """n agent messages for new conversations; timestamp 0 means Redis's now."""
    return [
        AgentMessage(
            f"{prefix}-{i:07d}", f"agent-{i % 500}", f"m-{i}", timestamps[i] if timestamps else 0
        )
        for i in range(n)
    ]


def cancels(messages: Sequence[AgentMessage]) -> list[CustomerResponse]:
    return [CustomerResponse(m.conversation_id, "cust-1", f"r-{m.message_id}", 0) for m in messages]


async def apply_all(store: Store, events: Sequence[Event]) -> float:
    """Apply events in batches of CHUNK, IN_FLIGHT at a time; returns the seconds taken."""
    limit = asyncio.Semaphore(IN_FLIGHT)

    async def one(chunk: Sequence[Event]) -> None:
        async with limit:
            await store.apply_many(chunk)

    started = time.perf_counter()
    await asyncio.gather(*(one(events[i : i + CHUNK]) for i in range(0, len(events), CHUNK)))
    return time.perf_counter() - started


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of a sorted sequence (0 when empty)."""
    if not values:
        return 0.0
    return float(values[min(len(values) - 1, int(q * len(values)))])


def cdf(values: Sequence[float], points: int = 200) -> list[tuple[float, float]]:
    """A down-sampled CDF of sorted values, for the plot."""
    if not values:
        return []
    n = len(values)
    step = max(1, n // points)
    out = [(float(values[i]), (i + 1) / n) for i in range(0, n, step)]
    out.append((float(values[-1]), 1.0))
    return out


def per_second(
    times_ms: Sequence[float], origin_ms: float, bin_ms: int = 100
) -> list[tuple[float, float]]:
    """Events per second in bins of bin_ms, x in seconds after origin_ms."""
    if not times_ms:
        return []
    ordered = sorted(times_ms)
    last = ordered[-1] - origin_ms
    out = []
    start = min(0.0, ordered[0] - origin_ms)
    edge = start
    while edge <= last:
        lo = bisect.bisect_left(ordered, origin_ms + edge)
        hi = bisect.bisect_left(ordered, origin_ms + edge + bin_ms)
        out.append((edge / 1000, (hi - lo) * 1000 / bin_ms))
        edge += bin_ms
    return out


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 0.50),
        "p90": percentile(values, 0.90),
        "p99": percentile(values, 0.99),
        "max": float(values[-1]) if values else 0.0,
        "count": float(len(values)),
    }


# --- Redis -----------------------------------------------------------------------------------


async def redis_now_ms(client: Client) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def total_commands(client: Client) -> int:
    """INFO stats total_commands_processed (it counts the commands scripts run, too)."""
    return int((await client.info("stats"))["total_commands_processed"])


async def commandstats(client: Client, field: str = "calls") -> dict[str, int]:
    """INFO commandstats: calls (or usec) by command."""
    stats = await client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v[field]) for k, v in stats.items()}


async def redis_cpu_s(client: Client) -> float:
    """CPU seconds the redis-server process has used (user + system)."""
    cpu = await client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def stats_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    delta = {k: v - before.get(k, 0) for k, v in after.items()}
    return dict(sorted(((k, v) for k, v in delta.items() if v), key=lambda kv: -kv[1]))


async def wait_pipeline_ready(client: Client, shard_count: int, wait_s: float = 30.0) -> None:
    """Every shard leased by the sweeper and every delivery group created by the consumers."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        shards = [ShardKeys.of(n) for n in range(shard_count)]
        async with client.pipeline(transaction=False) as pipe:
            for k in shards:
                pipe.exists(k.leader)
                pipe.xinfo_groups(k.outbox)
            replies = await pipe.execute(raise_on_error=False)
        leased = all(r == 1 for r in replies[0::2])
        grouped = all(
            isinstance(g, list) and any(x["name"] == CONSUMER_GROUP for x in g)
            for g in replies[1::2]
        )
        if leased and grouped:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("sweeper leases or consumer groups did not appear")


async def pending_total(client: Client, shard_count: int) -> int:
    total = 0
    for n in range(shard_count):
        groups = await client.xinfo_groups(ShardKeys.of(n).outbox)
        total += sum(int(g["pending"]) + int(g.get("lag") or 0) for g in groups)
    return total


# --- processes -------------------------------------------------------------------------------


class Pipeline:
    """A sweeper and CONSUMER_PROCESSES consumers as real processes, stopped by their pids."""

    def __init__(self, redis_url: str, workdir: Path, **env: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = role_env(redis_url, workdir / "run", POD_ID="bench", **env)
        self.roles: list[Role] = []
        try:
            self.roles.append(Role(["sweeper"], self.env, workdir / "sweeper.log"))
            for i in range(int(self.env.get("CONSUMER_PROCESSES", "2"))):
                args = ["consumer", "--index", str(i)]
                self.roles.append(Role(args, self.env, workdir / f"consumer-{i}.log"))
        except BaseException:
            self.stop()
            raise

    @property
    def sweeper(self) -> Role:
        return self.roles[0]

    @property
    def consumers(self) -> list[Role]:
        return self.roles[1:]

    def stop(self) -> None:
        for role in reversed(self.roles):
            role.stop()

    def tracebacks(self) -> str:
        return "".join(r.output() for r in self.roles if "Traceback" in r.output())


# --- external load tools ---------------------------------------------------------------------


def redis_benchmark(port: int, command: Sequence[str], requests: int = 300_000) -> float:
    """Requests/s of one command under redis-benchmark -P 16; __rand_int__ spans 10^8 values,
    so ids are (almost) all new, as in the workloads they are compared with."""
    binary = shutil.which("redis-benchmark")
    assert binary, "redis-benchmark is not installed (it comes with redis-server)"
    args = [binary, "-p", str(port), "-P", "16", "-n", str(requests), "-r", "100000000", "--csv"]
    out = subprocess.run(
        [*args, *command], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    row = out.strip().splitlines()[-1].split(",")
    return float(row[1].strip('"'))


WRK_SCRIPT = BENCH_DIR / "wrk_agent_message.lua"


def wrk(url: str, seconds: float, prefix: str, connections: int = 64) -> dict[str, Any]:
    """Requests/s of single agent-message POSTs (new conversation each) under wrk, keep-alive."""
    binary = shutil.which("wrk")
    assert binary, "wrk is not installed (make bench installs it: apt-get install wrk)"
    args = [
        binary,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        prefix,
    ]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=seconds + 60)
    text = out.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: (.+)", text)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
    p99_ms = 0.0
    if p99:
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
        p99_ms = float(p99.group(1)) * scale
    return {
        "rate": float(rate.group(1)) if rate else 0.0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "latency_p99_ms": p99_ms,
        "connections": connections,
        "seconds": seconds,
    }
