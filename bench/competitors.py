"""The same workload through BullMQ (bench/bullmq/run.mjs, npm-installed into an ignored
folder) and through the bare mover (bench/bare_mover.py), measured by the same downstream
reader or receiver as the tracker, in the same run, on the same Redis server."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis as sync_redis

from bench import harness
from bench.burst import STREAM, Workload
from bench.downstream import Arrival, Downstream

BULLMQ_DIR = Path(__file__).parent / "bullmq"
#: BullMQ adds 100,000 delayed jobs and removes half of them before the first is due.
BULLMQ_LEAD_S = 30.0
BULLMQ_CONCURRENCY = 50


@dataclass
class Outcome:
    """What the downstream side got from one system on one workload."""

    system: str
    workload: Workload
    first_due_ms: int
    arrivals: list[Arrival]

    @property
    def rate(self) -> float:
        """Notifications per second, from the first due time to the last arrival."""
        if not self.arrivals:
            return 0.0
        last = max(a.received_ms for a in self.arrivals)
        span_ms = max(last - self.first_due_ms, self.workload.window_ms, 1)
        return len(self.arrivals) * 1000 / span_ms

    def lateness(self) -> dict[str, float]:
        return harness.summary(sorted(a.received_ms - a.due_ms for a in self.arrivals))


def node_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def install_bullmq() -> None:
    """npm ci into bench/bullmq/node_modules (git ignores it), once."""
    if (BULLMQ_DIR / "node_modules" / "bullmq").is_dir():
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--silent"],
        cwd=BULLMQ_DIR,
        check=True,
        timeout=600,
    )


def _fresh(port: int) -> sync_redis.Redis:
    client = sync_redis.Redis(port=port)
    client.flushall()
    return client


def _first_due(client: sync_redis.Redis, lead_s: float) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000 + int(lead_s * 1000)


def run_bullmq(port: int, workdir: Path, workload: Workload) -> Outcome:
    install_bullmq()
    client = _fresh(port)
    first_due = _first_due(client, BULLMQ_LEAD_S)
    user = Downstream(workload.sink, workload.expected, workdir / "bullmq", port, STREAM)
    user.start()
    try:
        cfg = {
            "port": port,
            "n": workload.conversations,
            "windowMs": workload.window_ms,
            "cancelEvery": workload.cancel_every,
            "firstDueMs": first_due,
            "sink": workload.sink,
            "stream": STREAM,
            "url": user.url,
            "secret": user.secret,
            "concurrency": BULLMQ_CONCURRENCY,
        }
        done = subprocess.run(
            ["node", "run.mjs", orjson.dumps(cfg).decode()],
            cwd=BULLMQ_DIR,
            capture_output=True,
            text=True,
            timeout=BULLMQ_LEAD_S + workload.timeout_s,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return Outcome("BullMQ", workload, first_due, user.arrivals())
    finally:
        user.stop()
        client.close()


def run_bare(port: int, workdir: Path, workload: Workload) -> Outcome:
    """The bare mover (stream sink only: it has no HTTP client)."""
    client = _fresh(port)
    first_due = _first_due(client, workload.lead_s)
    user = Downstream("stream", workload.expected, workdir / "bare", port, STREAM)
    user.start()
    try:
        cfg = {
            "port": port,
            "n": workload.conversations,
            "windowMs": workload.window_ms,
            "cancelEvery": workload.cancel_every,
            "firstDueMs": first_due,
            "stream": STREAM,
        }
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "bench.bare_mover", orjson.dumps(cfg).decode()],
            capture_output=True,
            text=True,
            timeout=workload.lead_s + workload.timeout_s,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert time.monotonic() - started > 0
        return Outcome("bare mover", workload, first_due, user.arrivals())
    finally:
        user.stop()
        client.close()
