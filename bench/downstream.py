"""The downstream side of a lateness benchmark: the outbound stream's reader or the webhook's
receiver, each a process of its own (bench/reader.py, bench/receiver.py), so that what a
benchmark reports is when the user got each notification, not when it was stamped."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.receiver import SECRET
from tests.support.redis_server import free_port


@dataclass(frozen=True, slots=True)
class Arrival:
    received_ms: int
    due_ms: int
    fired_ms: int  # the notification's own fired_at (0 when it has none)


@dataclass
class Downstream:
    """A reader (sink "stream") or a receiver (sink "webhook") expecting `expect`
    notifications; `arrivals()` once it has them all."""

    sink: str
    expect: int
    workdir: Path
    redis_port: int
    stream: str = "bench_notifications"
    timeout_s: float = 180.0
    delay_ms: float = 0.0  # the webhook receiver answers this late
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def secret(self) -> str:
        return SECRET

    @property
    def out(self) -> Path:
        return self.workdir / f"arrivals-{self.sink}.txt"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        common = ["--expect", str(self.expect), "--out", str(self.out)]
        common += ["--timeout", str(self.timeout_s)]
        if self.sink == "stream":
            args = ["bench.reader", "--port", str(self.redis_port), "--stream", self.stream]
        else:
            self.port = free_port()
            args = ["bench.receiver", "--port", str(self.port), "--secret", self.secret]
            args += ["--delay-ms", str(self.delay_ms)]
        self.proc = subprocess.Popen([sys.executable, "-m", *args, *common], stdout=subprocess.PIPE)
        if self.sink == "webhook":  # listening before anything is sent
            assert self.proc.stdout is not None
            assert self.proc.stdout.readline().strip() == b"ready"

    def arrivals(self) -> list[Arrival]:
        """Wait for the process (it exits once it has `expect`), then read what it got."""
        assert self.proc is not None
        code = self.proc.wait(timeout=self.timeout_s + 30)
        assert code == 0, f"{self.sink} downstream exited {code}"
        out = []
        for line in self.out.read_text().splitlines():
            values = [int(v) for v in line.split()]
            out.append(Arrival(values[0], values[1], values[2] if len(values) > 2 else 0))
        return out

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def downstream(
    sink: str, expect: int, workdir: Path, redis_port: int, stream: str = "bench_notifications"
) -> Iterator[Downstream]:
    d = Downstream(sink, expect, workdir, redis_port, stream)
    d.start()
    try:
        yield d
    finally:
        d.stop()
