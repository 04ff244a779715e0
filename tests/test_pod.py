"""The pod's own machinery: the FATAL listener, readiness and the progress watchdog, dead
metric files, `tracker pod` and `tracker ctl` from any directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.processes import Pod, Role, role_env
from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import wait_http, wait_until
from tracker.pod import heartbeat
from tracker.pod.readiness import stall_ms
from tracker.settings import Settings
from tracker.timing import progress

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


async def status_of(url: str) -> tuple[int, dict[str, Any]]:
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
    assert "gave up: api-0 entered FATAL state" in output
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
        await wait_until(progress_file.exists, timeout=20)
        sweeper.signal(signal.SIGSTOP)  # it still holds its leases, but sweeps nothing
        await asyncio.sleep(2.5)  # past the watchdog (3 x CHECK_INTERVAL_MS, at least 2 s)
        code, body = await status_of(ready)
        assert code == 503
        assert body["error"] == {
            "code": "not_sweeping",
            "message": "shards not swept recently: 0, 1, 2, 3",
        }, body
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
        await wait_until(lambda: (metrics_dir / "counter_archive.db").exists(), timeout=10)
        pids = {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("*.db")}
        live = {str(pod.pid_of(f"consumer:consumer-{i}")) for i in range(2)}
        live |= {
            str(pod.pid_of(p))
            for p in ("api:api-0", "sweeper", "metrics-listener", "fatal-listener")
        }
        # Only live processes (and the archive) keep files: restarts do not pile them up.
        assert pids <= live | {"archive"}, pids - live
        assert await pod.metric_sum("http_requests_total") >= before
    finally:
        pod.stop()


def connections_served_by(pid: int, port: int) -> int:
    """Established TCP connections on `port` whose socket `pid` holds (from /proc)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes = set()
    for fd in fd_dir.iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
            count += 1
    return count


async def test_api_processes_share_the_port_and_stand_in_for_each_other(
    redis_server: RedisServer, redis_sync: object, tmp_path: Path
) -> None:
    """API_PROCESSES=2: both API processes take connections on the one port (SO_REUSEPORT),
    and with one stopped the other answers every request."""
    pod = Pod("two-apis", redis_server.url, tmp_path, API_PROCESSES="2", CONSUMER_PROCESSES="1")
    connections = 32
    try:
        await wait_http(f"{pod.base}/ready", timeout=30)
        await wait_until(lambda: "STARTING" not in pod.ctl("status"), timeout=20)
        pids = [pod.pid_of(f"api:api-{i}") for i in range(2)]
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def health() -> int:
                async with session.get(f"{pod.base}/health") as resp:
                    await asyncio.sleep(0.2)  # keep every connection busy: all open at once
                    return resp.status

            assert (
                await asyncio.gather(*(health() for _ in range(connections))) == [200] * connections
            )
            served = [connections_served_by(pid, pod.port) for pid in pids]
        assert sum(served) == connections
        assert min(served) > 0, served  # the kernel spread them over both

        assert "stopped" in pod.ctl("stop", "api:api-0")
        for i in range(20):  # new connections each: every one reaches api-1
            async with aiohttp.ClientSession() as session:
                url = f"{pod.base}/conversations/two-apis-{i}/agent-message"
                body = {"agent_id": "a", "message_id": f"m-{i}"}
                async with session.post(url, json=body) as resp:
                    assert resp.status == 200, await resp.text()
        assert "started" in pod.ctl("start", "api:api-0")
    finally:
        pod.stop()


async def test_ctl_status_exits_0_on_a_healthy_pod_run_from_another_directory(
    redis_server: RedisServer, redis_sync: object, tmp_path: Path
) -> None:
    """REDIS_URL set: no dormant redis program makes `ctl status` exit 3; `tracker pod`
    and `tracker ctl` find the supervisord.conf shipped in the package. /ready answers 200
    only once every role has completed a loop round."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pod = Pod("ctl-pod", redis_server.url, tmp_path, cwd=str(elsewhere), CONSUMER_PROCESSES="2")
    try:
        await wait_http(f"{pod.base}/ready", timeout=30)
        settings = Settings.from_env(pod.env)
        assert {s.name for s in heartbeat.read_all(settings)} == {
            "sweeper",
            "consumer-0",
            "consumer-1",
        }
        assert all(s.progress_ms for s in heartbeat.read_all(settings))
        await wait_until(lambda: "STARTING" not in pod.ctl("status"), timeout=20)
        done = pod.ctl_run("status")
        assert done.returncode == 0, done.stdout
        assert "redis" not in done.stdout
        assert "stopped" in pod.ctl("stop", "sweeper")
        done = pod.ctl_run("status")
        assert done.returncode == 3, done.stdout  # a program that is not running shows
        assert "started" in pod.ctl("start", "sweeper")
    finally:
        pod.stop()


async def test_phase1_pod_with_its_own_redis_is_healthy(tmp_path: Path) -> None:
    """No REDIS_URL: the embedded redis-server runs (its config shipped in the package) and
    phase 1 defines no consumer: `ctl status` exits 0. With LOG_FORMAT=json, redis-server's
    own text goes to RUN_DIR/redis.log: the pod's stream holds JSON only."""
    pod = Pod("embedded", "", tmp_path, cwd=str(tmp_path), MODE="phase1", LOG_FORMAT="json")
    try:
        await wait_http(f"{pod.base}/ready", timeout=30)
        await wait_until(lambda: "STARTING" not in pod.ctl("status"), timeout=20)
        done = pod.ctl_run("status")
        assert done.returncode == 0, done.stdout
        programs = {line.split()[0] for line in done.stdout.splitlines()}
        assert programs == {"api:api-0", "sweeper", "redis", "metrics-listener", "fatal-listener"}
        status, body = await status_of(f"{pod.base}/ready")
        assert status == 200
        assert body["roles"] == {"sweeper": "ok", "sweeper-delivery": "ok"}, body
    finally:
        pod.stop()
    for line in pod.role.output().splitlines():
        assert orjson.loads(line)["pod"] == "embedded", line
    assert "Redis is starting" in (pod.run_dir / "redis.log").read_text()


async def test_ready_fails_when_a_consumer_is_stuck_and_recovers(
    redis_server: RedisServer, redis_sync: object, tmp_path: Path
) -> None:
    """A frozen consumer writes no heartbeat: after the stall limit the pod is not ready,
    and it is again once the consumer runs."""
    pod = Pod("stuck", redis_server.url, tmp_path, CONSUMER_PROCESSES="2")
    ready = f"{pod.base}/ready"
    pid = 0
    try:
        await wait_http(ready, timeout=30)
        pid = pod.pid_of("consumer:consumer-1")
        os.kill(pid, signal.SIGSTOP)
        limit_s = stall_ms(Settings.from_env(pod.env)) / 1000
        started = time.monotonic()
        await wait_http(ready, timeout=limit_s + 10, status=503)
        waited = time.monotonic() - started
        code, body = await status_of(ready)
        assert code == 503
        assert body["error"]["code"] == "stalled", body
        assert body["error"]["message"].startswith("consumer-1: silent for"), body
        assert waited >= limit_s - 1, waited  # not before the limit
        os.kill(pid, signal.SIGCONT)
        await wait_http(ready, timeout=10)
        print(f"\nunready {waited:.1f} s after SIGSTOP (limit {limit_s:.0f} s)")
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        pod.stop()


def test_supervisord_run_directly_fails_in_one_line_naming_tracker_pod(tmp_path: Path) -> None:
    supervisord = Path(sys.executable).parent / "supervisord"
    done = subprocess.run(
        [str(supervisord), "-c", str(ROOT / "supervisord.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
    )
    assert done.returncode == 2
    first, *rest = done.stderr.splitlines()
    assert "`tracker pod`" in first, done.stderr
    assert rest == [f"For help, use {supervisord} -h"], done.stderr  # supervisord's own
    assert "ENV_" not in done.stderr


def test_the_wheel_ships_the_supervisord_and_redis_configuration(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT,
        tmp_path / "src",
        ignore=shutil.ignore_patterns(".venv", "var", ".git", "*.egg-info", "build", "dist"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path / "dist"), str(tmp_path / "src")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [wheel] = (tmp_path / "dist").glob("tracker-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"tracker/pod/conf/supervisord.conf", "tracker/pod/conf/redis.conf"} <= names
