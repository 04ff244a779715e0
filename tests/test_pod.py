"""The pod's own machinery: the FATAL listener, the progress watchdog, dead metric files."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from tests.processes import Pod, Role, role_env, wait_http, wait_until
from tests.redis_server import RedisServer, free_port
from tracker import progress

pytestmark = pytest.mark.slow


async def status_of(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def test_a_fatal_program_stops_the_whole_pod(
    redis_server: RedisServer, redis_sync: object, tmp_path: Path
) -> None:
    """The API cannot bind its port, goes FATAL, and the listener stops supervisord, so an
    orchestrator would restart the pod."""
    pod = Pod("fatal-pod", redis_server.url, tmp_path, CONSUMER_PROCESSES="1")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", pod.port))
        squatter.listen()
        pod_started = time.monotonic()
        try:
            code = await asyncio.to_thread(pod.role.proc.wait, 60)
        finally:
            pod.stop()
    output = pod.role.output()
    assert "gave up: api entered FATAL state" in output
    assert "program FATAL, stopping supervisord" in output
    print(f"\npod exited with {code} {time.monotonic() - pod_started:.1f} s after start")


async def test_ready_fails_when_a_led_shard_is_not_swept(
    redis_server: RedisServer, redis_sync: object, tmp_path: Path
) -> None:
    port = free_port()
    env = role_env(
        redis_server.url,
        tmp_path / "run",
        PORT=str(port),
        POD_ID="watchdog",
        CHECK_INTERVAL_MS="300",
        LEADER_ELECTION_TTL="30",
        SHARD_COUNT="4",
    )
    api = Role(["api"], env, tmp_path / "api.log")
    sweeper = Role(["sweeper"], env, tmp_path / "sweeper.log")
    ready = f"http://127.0.0.1:{port}/ready"
    try:
        await wait_http(ready, timeout=20)
        progress_file = tmp_path / "run" / progress.FILE_NAME
        assert await wait_until(progress_file.exists, timeout=20)
        sweeper.signal(signal.SIGSTOP)  # it still holds its leases, but sweeps nothing
        await asyncio.sleep(2.5)  # past the watchdog (3 x CHECK_INTERVAL_MS, at least 2 s)
        code, body = await status_of(ready)
        assert code == 503
        assert body["error"] == {
            "code": "not_sweeping",
            "message": "shards not swept recently: 0, 1, 2, 3",
        }
        code, _ = await status_of(f"http://127.0.0.1:{port}/health")
        assert code == 200
        sweeper.signal(signal.SIGCONT)
        await wait_http(ready, timeout=10)
    finally:
        sweeper.signal(signal.SIGCONT)
        sweeper.stop()
        api.stop()


async def test_metric_files_of_exited_processes_are_folded_into_an_archive(
    redis_server: RedisServer, redis_sync: object, tmp_path: Path
) -> None:
    pod = Pod("files-pod", redis_server.url, tmp_path, CONSUMER_PROCESSES="2")
    metrics_dir = pod.run_dir / "metrics"
    try:
        await wait_http(f"{pod.base}/ready", timeout=30)
        before = await pod.metric_sum("http_requests_total")
        for _ in range(3):
            assert "started" in pod.ctl("restart", "consumer:*")
        assert await wait_until(lambda: (metrics_dir / "counter_archive.db").exists(), timeout=10)
        pids = {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("*.db")}
        live = {str(pod.pid_of(f"consumer:consumer-{i}")) for i in range(2)}
        live |= {str(pod.pid_of(p)) for p in ("api", "sweeper")}
        # Only live processes (and the archive) keep files: restarts do not pile them up.
        assert pids <= live | {"archive"}, pids - live
        assert await pod.metric_sum("http_requests_total") >= before
    finally:
        pod.stop()
