"""`python -m bench.profile`: py-spy profiles of the API under load and of a consumer and the
sweeper during the 100K burst; the hottest functions go to bench/results/profile.md.

It starts its own redis-server and processes, and stops every one of them by pid.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench import burst, harness
from bench.bench_http import bodies, post_all
from bench.report import RESULTS_DIR
from tests.support.processes import Role, role_env
from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import wait_http

SECONDS = 8
ROOT = str(Path(__file__).resolve().parents[1]) + "/"
TOP = 15


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args = [
        binary,
        "record",
        "-p",
        str(pid),
        "-d",
        str(int(seconds)),
        "-r",
        "200",
        "--nonblocking",
        "--format",
        "raw",
        "-o",
        str(out),
    ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class Profile:
    samples: int
    own: collections.Counter[str]
    inclusive: collections.Counter[str]
    by_package: collections.Counter[str]


def hotspots(collapsed: Path) -> Profile:
    """Own time by function and by package; inclusive time of the tracker's functions."""
    p = Profile(0, collections.Counter(), collections.Counter(), collections.Counter())
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        p.samples += count
        p.own[frames[-1]] += count
        p.by_package[_package(frames[-1])] += count
        for name in set(frames):
            if "(tracker/" in name and "__main__" not in name:
                p.inclusive[name] += count
    return p


def _function(frame: str) -> str:
    """'handle (/x/tracker/delivery.py:123)' -> 'handle (tracker/delivery.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in (
        "site-packages/",
        f"/lib/python{sys.version_info[0]}.{sys.version_info[1]}/",
        ROOT,
    ):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def _package(function: str) -> str:
    path = function.rpartition(" (")[2].rstrip(")")
    top = path.split("/", 1)[0]
    return top.removesuffix(".py") if "/" in path or top.endswith(".py") else path


def section(title: str, collapsed: Path) -> str:
    if not collapsed.exists():
        return f"## {title}\n\nno samples (py-spy could not attach)\n"
    p = hotspots(collapsed)
    share = ", ".join(
        f"{name} {100 * n / p.samples:.0f}%" for name, n in p.by_package.most_common(6)
    )
    lines = [
        f"## {title}",
        "",
        f"{p.samples} samples at 200 Hz (on-CPU only). Own time by package: {share}.",
        "",
        "| own % | function (own time) | inclusive % | tracker function (with callees) |",
        "|---:|---|---:|---|",
    ]
    rows = zip(p.own.most_common(TOP), p.inclusive.most_common(TOP), strict=False)
    for (o_name, o_count), (i_name, i_count) in rows:
        lines.append(
            f"| {100 * o_count / p.samples:.1f} | `{o_name}`"
            f" | {100 * i_count / p.samples:.1f} | `{i_name}` |"
        )
    return "\n".join(lines) + "\n"


async def profile_api(redis: RedisServer, workdir: Path) -> list[str]:
    port = free_port()
    env = role_env(
        redis.url, workdir / "api-run", PORT=str(port), POD_ID="profile", LOG_LEVEL="WARNING"
    )
    api = Role(["api"], env, workdir / "api.log")
    base = f"http://127.0.0.1:{port}"
    out: list[str] = []
    try:
        await wait_http(f"{base}/health")
        single = workdir / "api-single.txt"
        spy = py_spy(api.pid, SECONDS, single)
        await asyncio.to_thread(harness.wrk, base, SECONDS + 1, "profile")
        spy.wait(timeout=60)
        out.append(section("API, single agent-message requests under wrk (-c64)", single))
        batch = workdir / "api-events.txt"
        items = [
            {
                "type": "agent_message",
                "conversation_id": f"pe-{i}",
                "agent_id": "a",
                "message_id": f"m-{i}",
            }
            for i in range(200_000)
        ]
        spy = py_spy(api.pid, SECONDS, batch)
        await post_all(base, bodies(items))
        spy.wait(timeout=60)
        out.append(section("API, POST /events (1000 per request, 4 in flight)", batch))
    finally:
        api.stop()
    return out


async def profile_burst(redis: RedisServer, workdir: Path) -> list[str]:
    spies: list[subprocess.Popen[bytes]] = []
    files = {"consumer": workdir / "consumer.txt", "sweeper": workdir / "sweeper.txt"}

    def attach(pipeline: harness.Pipeline) -> None:
        spies.append(py_spy(pipeline.consumers[0].pid, 6, files["consumer"]))
        spies.append(py_spy(pipeline.sweeper.pid, 6, files["sweeper"]))

    try:
        result = await burst.run(redis.url, workdir / "burst", burst.Workload(), on_due=attach)
    finally:
        for spy in spies:
            spy.wait(timeout=60)
    note = f"{len(result.delivered)} delivered at {result.rate:.0f}/s"
    return [
        section(f"Consumer 0 during the 100K burst, stream sink ({note})", files["consumer"]),
        section("Sweeper during the 100K burst", files["sweeper"]),
    ]


async def main_async(workdir: Path) -> str:
    redis = RedisServer(workdir / "redis")
    redis.start()
    try:
        parts = await profile_api(redis, workdir)
        parts += await profile_burst(redis, workdir)
    finally:
        redis.stop()
    return "# Profiles (py-spy)\n\n" + "\n".join(parts)


def main() -> int:
    base = Path("var")
    base.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="profile-", dir=base) as workdir:
        text = uvloop.run(main_async(Path(workdir)))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "profile.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
