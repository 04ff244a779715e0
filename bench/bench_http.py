"""HTTP ingest into one real API process: single events under wrk against a bare
aiohttp+uvloop handler measured the same way, and bulk POST /events; and single events into
two API processes sharing one port (API_PROCESSES=2) against one."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
import redis as sync_redis
import uvloop

from bench import harness
from bench.report import Report
from tests.support.processes import Role, role_env, running_api
from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import wait_http

WRK_SECONDS = 4
#: Connections for the two-process figure: enough to keep both processes busy.
WRK_CONNECTIONS_TWO = 128
WRK_ROUNDS = 3
CONVERSATIONS = 100_000
ROUNDS = 3


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One API process (no sweeper: nothing fires during the ingest figures)."""
    workdir = tmp_path_factory.mktemp("api")
    with running_api(redis_server.url, workdir, POD_ID="bench", LOG_LEVEL="WARNING") as base:
        yield base


@pytest.fixture(scope="module")
def bare() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.bare_server", str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        uvloop.run(wait_http(f"{base}/conversations/x/agent-message", status=405))
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def two_apis(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two API processes on one port (SO_REUSEPORT), as a pod with API_PROCESSES=2 runs them."""
    workdir = tmp_path_factory.mktemp("two-apis")
    port = free_port()
    env = role_env(
        redis_server.url, workdir / "run", PORT=str(port), POD_ID="bench2", LOG_LEVEL="WARNING"
    )
    roles = [Role(["api"], env, workdir / f"api-{i}.log") for i in range(2)]
    base = f"http://127.0.0.1:{port}"
    try:
        uvloop.run(wait_http(f"{base}/health"))
        yield base
    finally:
        for role in roles:
            role.stop()


Run = dict[str, Any]


def wrk_in_turn(
    benchmark: Any, first: str, second: str, tags: tuple[str, str], connections: int = 64
) -> tuple[list[Run], list[Run], float]:
    """wrk on `first` and `second` in turn, WRK_ROUNDS times (the machine is shared, so
    neighbours cancel out): the runs of each, and the median of the pairwise ratios
    second / first."""
    pairs: list[tuple[Run, Run]] = []

    def target() -> None:
        n = len(pairs)
        pairs.append(
            (
                harness.wrk(first, WRK_SECONDS, f"{tags[0]}{n}", connections),
                harness.wrk(second, WRK_SECONDS, f"{tags[1]}{n}", connections),
            )
        )

    benchmark.pedantic(target, rounds=WRK_ROUNDS)
    ratio = statistics.median(b["rate"] / a["rate"] for a, b in pairs)
    return [a for a, _ in pairs], [b for _, b in pairs], ratio


def median_rate(runs: list[Run]) -> float:
    return float(statistics.median(r["rate"] for r in runs))


def rounds_of(runs: list[Run]) -> dict[str, Any]:
    """What the report keeps of a figure's runs."""
    return {
        "rounds": [r["rate"] for r in runs],
        "latency_p99_ms": [r["latency_p99_ms"] for r in runs],
        "connections": runs[0]["connections"],
        "seconds": WRK_SECONDS,
    }


def test_http_single_event_two_processes(
    benchmark: Any, api: str, two_apis: str, redis_sync: sync_redis.Redis, report: Report
) -> None:
    """One API process and two on one port in turn, under the same wrk (more connections, so
    that two processes have work)."""
    harness.wrk(two_apis, 1, "warm2", connections=WRK_CONNECTIONS_TWO)
    one, two, ratio = wrk_in_turn(benchmark, api, two_apis, ("one", "two"), WRK_CONNECTIONS_TWO)
    assert all(r["non_2xx"] == 0 for r in one + two), one + two
    benchmark.extra_info.update(one_per_s=median_rate(one), two_per_s=median_rate(two), ratio=ratio)
    report.add("http_single_one_c128", median_rate(one), **rounds_of(one))
    report.add("http_single_two", median_rate(two), ratio=ratio, **rounds_of(two))


def test_http_single_event_vs_bare(
    benchmark: Any, api: str, bare: str, redis_sync: sync_redis.Redis, report: Report
) -> None:
    """wrk on the bare handler and on the API in turn: medians and the median of the
    pairwise ratios."""
    harness.wrk(bare, 1, "warm")
    harness.wrk(api, 1, "warm")
    bare_runs, api_runs, ratio = wrk_in_turn(benchmark, bare, api, ("b", "a"))
    assert all(r["non_2xx"] == 0 for r in api_runs), api_runs
    bare_rate, api_rate = median_rate(bare_runs), median_rate(api_runs)
    benchmark.extra_info.update(bare_per_s=bare_rate, api_per_s=api_rate, ratio=ratio)
    report.add("ceiling_bare_http", bare_rate, **rounds_of(bare_runs))
    report.add("http_single", api_rate, ratio=ratio, **rounds_of(api_runs))


def bodies(items: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(items[i : i + harness.CHUNK]) for i in range(0, len(items), harness.CHUNK)]


async def post_all(base: str, payloads: list[bytes]) -> tuple[float, int]:
    """POST every body, IN_FLIGHT at a time; returns (seconds, items not ok)."""
    connector = aiohttp.TCPConnector(limit=harness.IN_FLIGHT)
    headers = {"Content-Type": "application/json"}
    limit = asyncio.Semaphore(harness.IN_FLIGHT)
    bad = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(body: bytes) -> None:
            nonlocal bad
            async with limit, session.post(f"{base}/events", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                results = orjson.loads(await r.read())["results"]
                bad += sum(1 for x in results if x["status"] != "ok")

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in payloads))
        return time.perf_counter() - started, bad


def test_http_events(
    benchmark: Any, api: str, redis_sync: sync_redis.Redis, report: Report
) -> None:
    rates: list[tuple[float, float]] = []

    def target() -> None:
        redis_sync.flushall()
        prefix = f"h{len(rates)}"
        ids = [f"{prefix}-{i:07d}" for i in range(CONVERSATIONS)]
        starts = bodies(
            [
                {
                    "type": "agent_message",
                    "conversation_id": c,
                    "agent_id": f"agent-{i % 500}",
                    "message_id": f"m-{i}",
                }
                for i, c in enumerate(ids)
            ]
        )
        answers = bodies(
            [
                {
                    "type": "customer_response",
                    "conversation_id": c,
                    "customer_id": "cust-1",
                    "message_id": f"r-{c}",
                }
                for c in ids[::2]
            ]
        )
        schedule_s, bad_starts = uvloop.run(post_all(api, starts))
        cancel_s, bad_answers = uvloop.run(post_all(api, answers))
        assert bad_starts == bad_answers == 0
        rates.append((len(ids) / schedule_s, len(ids[::2]) / cancel_s))

    benchmark.pedantic(target, rounds=ROUNDS)
    schedule = statistics.median(r[0] for r in rates)
    cancel = statistics.median(r[1] for r in rates)
    benchmark.extra_info.update(schedule_per_s=schedule, cancel_per_s=cancel)
    common = {"batch": harness.CHUNK, "in_flight": harness.IN_FLIGHT}
    report.add(
        "http_events_schedule",
        schedule,
        rounds=[round(r[0]) for r in rates],
        events=CONVERSATIONS,
        **common,
    )
    report.add(
        "http_events_cancel",
        cancel,
        rounds=[round(r[1]) for r in rates],
        events=CONVERSATIONS // 2,
        **common,
    )
