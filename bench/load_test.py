"""`make load-test`: drive a running pod (`make run`) at a bounded rate for a bounded time.

Half of the requests start conversations (agent messages with a short timeout_ms, so
notifications fire during the run); the other half answer every other one of them before
it is due. A progress bar goes to stderr; the summary (requests/s, errors, client latency,
and the pod's lateness and stream backlog from /metrics) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ipaddress
import os
import re
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import orjson
import uvloop

MAX_RATE = 20_000
MAX_DURATION_S = 600
LATENESS = "timeout_firing_lateness_seconds"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="load_test", description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the pod's API (loopback)")
    p.add_argument("--rate", type=float, default=500, help=f"requests/s, at most {MAX_RATE}")
    p.add_argument("--duration", type=float, default=30, help=f"seconds, at most {MAX_DURATION_S}")
    p.add_argument("--timeout-ms", type=int, default=2000, help="timeout_ms of each conversation")
    p.add_argument("--concurrency", type=int, default=256, help="requests in flight at most")
    args = p.parse_args(argv)
    if not 0 < args.rate <= MAX_RATE:
        p.error(f"--rate must be in (0, {MAX_RATE}]")
    if not 0 < args.duration <= MAX_DURATION_S:
        p.error(f"--duration must be in (0, {MAX_DURATION_S}]")
    host = urlsplit(args.url).hostname or ""
    if host != "localhost" and not _is_loopback(host):
        p.error(f"--url must point at this machine (loopback), got {host!r}")
    return args


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- /metrics --------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """Prometheus text exposition -> {(name, labels): value}."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if found and not line.startswith("#"):
            out[(found.group(1), found.group(2) or "")] = float(found.group(3))
    return out


def total(metrics: dict[tuple[str, str], float], name: str) -> float:
    return sum(v for (n, _), v in metrics.items() if n == name)


def buckets(metrics: dict[tuple[str, str], float], name: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) of a histogram, summed over label sets."""
    by_le: dict[float, float] = collections.defaultdict(float)
    for (n, labels), v in metrics.items():
        le = re.search(r'le="([^"]+)"', labels)
        if n == f"{name}_bucket" and le:
            by_le[float(le.group(1))] += v
    return sorted(by_le.items())


def quantile(cumulative: list[tuple[float, float]], q: float) -> float | None:
    """histogram_quantile: linear interpolation inside the bucket holding the q-th sample."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in cumulative:
        if count >= rank:
            if upper == float("inf"):
                return lower
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, count
    return lower


def delta(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    old = dict(before)
    return [(le, count - old.get(le, 0.0)) for le, count in after]


async def scrape(session: aiohttp.ClientSession, base: str) -> dict[tuple[str, str], float]:
    async with session.get(f"{base}/metrics") as resp:
        resp.raise_for_status()
        return parse_metrics(await resp.text())


# --- load ------------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    by_status: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies_ms: list[float] = field(default_factory=list)
    started: collections.deque[tuple[float, str]] = field(default_factory=collections.deque)


class Load:
    def __init__(self, args: argparse.Namespace, session: aiohttp.ClientSession) -> None:
        self.args = args
        self.session = session
        self.base = args.url.rstrip("/")
        self.tally = Tally()
        self.limit = asyncio.Semaphore(args.concurrency)
        self.run_id = f"lt{int(time.time())}"
        self.tasks: set[asyncio.Task[None]] = set()
        self.answer_after_s = args.timeout_ms / 2000
        self.to_answer = False

    def next_request(self, now: float) -> tuple[str, bytes]:
        """Answer the oldest started conversation once it is half-way to due, else start one."""
        started = self.tally.started
        if started and now - started[0][0] >= self.answer_after_s:
            _, conversation = started.popleft()
            body = {"customer_id": "load-customer", "message_id": f"r-{conversation}"}
            return f"/conversations/{conversation}/customer-response", orjson.dumps(body)
        n = self.tally.sent
        conversation = f"{self.run_id}-{n}"
        self.to_answer = not self.to_answer
        if self.to_answer:
            started.append((now, conversation))
        body = {
            "agent_id": f"agent-{n % 50}",
            "message_id": f"m-{n}",
            "timeout_ms": self.args.timeout_ms,
        }
        return f"/conversations/{conversation}/agent-message", orjson.dumps(body)

    async def one(self, path: str, body: bytes) -> None:
        t0 = time.perf_counter()
        headers = {"Content-Type": "application/json"}
        if token := os.environ.get("API_TOKEN", "").split(",")[0].strip():
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with self.session.post(self.base + path, data=body, headers=headers) as resp:
                await resp.read()
                status = str(resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        finally:
            self.limit.release()
        self.tally.latencies_ms.append((time.perf_counter() - t0) * 1000)
        self.tally.by_status[status] += 1
        if status.startswith("2"):
            self.tally.ok += 1
        else:
            self.tally.errors += 1

    async def run(self) -> float:
        """Send at the rate until the duration is over; returns the seconds it took."""
        args = self.args
        start = time.monotonic()
        total_requests = int(args.rate * args.duration)
        progress = asyncio.create_task(self.show_progress(start))
        try:
            while self.tally.sent < total_requests:
                now = time.monotonic()
                due = min(total_requests, int((now - start) * args.rate) + 1)
                while self.tally.sent < due:
                    await self.limit.acquire()
                    path, body = self.next_request(time.monotonic())
                    task = asyncio.create_task(self.one(path, body))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                    self.tally.sent += 1
                await asyncio.sleep(max(0.0, start + due / args.rate - time.monotonic()))
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=30)
        finally:
            progress.cancel()
            self.render(start, final=True)
        return time.monotonic() - start

    async def show_progress(self, start: float) -> None:
        tty = sys.stderr.isatty()
        while True:
            await asyncio.sleep(0.25 if tty else 5.0)
            self.render(start, final=False)

    def render(self, start: float, *, final: bool) -> None:
        elapsed = time.monotonic() - start
        frac = min(1.0, elapsed / self.args.duration)
        bar = "#" * int(frac * 30) + "." * (30 - int(frac * 30))
        t = self.tally
        line = (
            f"[{bar}] {elapsed:5.1f}/{self.args.duration:.0f}s sent {t.sent} ok {t.ok}"
            f" errors {t.errors} in-flight {len(self.tasks)} {t.sent / max(elapsed, 1e-9):.0f}/s"
        )
        end = "\n" if final or not sys.stderr.isatty() else ""
        print(f"\r{line}", end=end, file=sys.stderr, flush=True)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


async def main_async(args: argparse.Namespace) -> int:
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        base = args.url.rstrip("/")
        try:
            before = await scrape(session, base)
        except (aiohttp.ClientError, OSError) as exc:
            print(
                f"load_test: {base}/metrics is not answering ({exc}); is `make run` up?",
                file=sys.stderr,
            )
            return 2
        load = Load(args, session)
        elapsed = await load.run()
        settle = min(10.0, 1.2 * args.timeout_ms / 1000 + 1)
        print(f"waiting {settle:.1f}s for the last level-1 notifications ...", file=sys.stderr)
        await asyncio.sleep(settle)
        after = await scrape(session, base)
    t = load.tally
    late = delta(buckets(after, LATENESS), buckets(before, LATENESS))
    fired = late[-1][1] if late else 0.0
    sent_before = total(before, "timeout_notifications_sent_total")
    print(
        f"requests      {t.sent} in {elapsed:.1f}s = {t.sent / elapsed:.0f}/s"
        f" (target {args.rate:.0f}/s)"
    )
    print(f"errors        {t.errors}  by status: {dict(t.by_status)}")
    print(
        f"latency       p50 {_pct(t.latencies_ms, 0.5):.1f} ms"
        f"  p99 {_pct(t.latencies_ms, 0.99):.1f} ms (client side)"
    )
    print(
        f"notifications {fired:.0f} fired during the run"
        f" ({total(after, 'timeout_notifications_sent_total') - sent_before:.0f} sent)"
    )
    print(
        f"lateness      p50 {_ms(quantile(late, 0.5))}  p99 {_ms(quantile(late, 0.99))}"
        " (from /metrics buckets, this run only)"
    )
    print(
        f"backlog       {total(after, 'timeout_stream_backlog'):.0f} unread,"
        f" {total(after, 'timeout_stream_pending'):.0f} pending"
        f" (at the end; the sweeper refreshes it every 5 s)"
    )
    return 1 if t.errors else 0


def main(argv: list[str] | None = None) -> int:
    return uvloop.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
