"""HTTP clients for the webhook sink, side by side: signed POSTs of notification-sized bodies
from one process, CONCURRENCY in flight, to nginx answering 204 (the client's own limit) and
to bench/receiver.py (a Python receiver that checks every signature, as a real one would).

    python -m bench.webhook_clients [N]

Prints requests/s and the sending process's CPU per request for each client and receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from tests.support.receiver import SECRET
from tests.support.redis_server import free_port
from tracker.delivery.notification import Notification
from tracker.delivery.signing import decode_secret, sign

CONCURRENCY = 64
Sender = Callable[[str, int], Coroutine[Any, Any, None]]


def requests(n: int) -> Iterator[tuple[bytes, dict[str, str]]]:
    keys = (decode_secret(SECRET),)
    for i in range(n):
        note = Notification(f"{i}-0", 0, f"conv-{i}", 1, 1, "agent-1", "m-1", 0, 1000)
        body = note.outgoing(1001).body()
        ts = int(time.time())
        event = note.event_id
        yield (
            body,
            {
                "content-type": "application/json",
                "webhook-id": event,
                "webhook-timestamp": str(ts),
                "webhook-signature": sign(keys, event, ts, body),
            },
        )


async def with_aiohttp(url: str, n: int) -> None:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    limit = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(body: bytes, headers: dict[str, str]) -> None:
            async with limit, session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                assert resp.status < 300, resp.status

        await asyncio.gather(*(post(b, h) for b, h in requests(n)))


async def with_pyreqwest(url: str, n: int) -> None:
    from pyreqwest.client import ClientBuilder

    builder = ClientBuilder().max_connections(CONCURRENCY).timeout(timedelta(seconds=5))
    limit = asyncio.Semaphore(CONCURRENCY)
    async with builder.build() as client:

        async def post(body: bytes, headers: dict[str, str]) -> None:
            async with limit:
                resp = await client.post(url).headers(headers).body_bytes(body).build().send()
                await resp.bytes()
                assert resp.status < 300, resp.status

        await asyncio.gather(*(post(b, h) for b, h in requests(n)))


async def with_pycurl(url: str, n: int) -> None:
    """A curl multi handle with CONCURRENCY easy handles, run to completion (blocking)."""
    import pycurl

    multi = pycurl.CurlMulti()
    multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, CONCURRENCY)
    todo = requests(n)
    free = [pycurl.Curl() for _ in range(CONCURRENCY)]
    sinks: dict[int, io.BytesIO] = {}
    done = 0

    def start(curl: pycurl.Curl) -> bool:
        item = next(todo, None)
        if item is None:
            return False
        body, headers = item
        sink = io.BytesIO()
        sinks[id(curl)] = sink
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.POSTFIELDS, body)
        curl.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in headers.items()])
        curl.setopt(pycurl.WRITEDATA, sink)
        multi.add_handle(curl)
        return True

    for curl in list(free):
        start(curl)
    while done < n:
        multi.perform()
        multi.select(0.1)
        _, finished, failed = multi.info_read()
        assert not failed, failed
        for curl in finished:
            assert curl.getinfo(pycurl.RESPONSE_CODE) < 300
            multi.remove_handle(curl)
            done += 1
            start(curl)


CLIENTS: dict[str, Sender] = {
    "aiohttp": with_aiohttp,
    "pyreqwest": with_pyreqwest,
    "pycurl multi": with_pycurl,
}


@contextlib.contextmanager
def nginx() -> Iterator[str]:
    binary = shutil.which("nginx")
    assert binary, "nginx is not installed (Debian's nginx-light)"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            f"daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;\n"
            "events { worker_connections 4096; }\n"
            f"http {{ access_log off; client_body_temp_path {tmp};\n"
            f"  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;\n"
            "    location / { return 204; } } }\n"
        )
        proc = subprocess.Popen([binary, "-c", str(conf), "-p", tmp], stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            yield f"http://127.0.0.1:{port}/hook"
        finally:
            proc.terminate()
            proc.wait()


@contextlib.contextmanager
def python_receiver(expect: int) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.receiver", "--port", str(port)),
                *("--secret", SECRET, "--expect", str(expect), "--out", f"{tmp}/out.txt"),
            ],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == b"ready"
            yield f"http://127.0.0.1:{port}/hook"
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()


def measure(sender: Sender, url: str, n: int) -> tuple[float, float]:
    """(requests/s, CPU µs per request of this process)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    uvloop.run(sender(url, n))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return n / wall, cpu / n * 1e6


def compare(n: int) -> dict[str, dict[str, tuple[float, float]]]:
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for name, sender in CLIENTS.items():
        with nginx() as url:
            results.setdefault(name, {})["nginx 204"] = measure(sender, url, n)
        with python_receiver(n) as url:
            results[name]["Python receiver"] = measure(sender, url, n)
    return results


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    for name, by_receiver in compare(n).items():
        for receiver, (rate, cpu_us) in by_receiver.items():
            print(f"{name:14} {receiver:16} {rate:9,.0f} req/s  {cpu_us:6.0f} µs CPU/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
