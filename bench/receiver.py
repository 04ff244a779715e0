"""Where the user is, for the webhook sink: a separate process that receives the POSTs as a
downstream service would, checks every Standard Webhooks signature (the official package),
answers 204, and stamps each notification when its request is complete.

    python -m bench.receiver --port P --secret whsec_... --expect N --out FILE [--timeout S]
        [--delay-ms MS]

uvloop and httptools, no framework: it must not be what limits the rate. Writes one line
per notification, ``received_ms due_ms fired_ms``, exits once N arrived (1 when not in time), and
prints ``ready`` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import cast

import httptools
import orjson
import uvloop
from standardwebhooks.webhooks import Webhook

from tracker.timefmt import parse_rfc3339_ms

NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
REFUSED = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


class Tally:
    def __init__(self, secret: str, expect: int, delay_s: float = 0.0) -> None:
        self.hook = Webhook(secret)
        self.expect = expect
        self.delay_s = delay_s
        self.rows: list[tuple[int, int, int]] = []
        self.bad = 0
        self.done = asyncio.Event()

    def take(self, headers: dict[str, str], body: bytes) -> bool:
        received = int(time.time() * 1000)
        try:
            self.hook.verify(body, headers)
        except Exception:
            self.bad += 1
            return False
        event = orjson.loads(body)
        fired = parse_rfc3339_ms(event["fired_at"]) if event.get("fired_at") else 0
        self.rows.append((received, parse_rfc3339_ms(event["due_at"]), fired))
        if len(self.rows) >= self.expect:
            self.done.set()
        return True


class Connection(asyncio.Protocol):
    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's, not asyncio's class

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.headers = {}
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        ok = self.tally.take(self.headers, b"".join(self.body))
        if self.tally.delay_s:  # a receiver farther away: the answer takes this long
            asyncio.get_running_loop().call_later(self.tally.delay_s, self._answer, ok)
        else:
            self._answer(ok)

    def _answer(self, ok: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(NO_CONTENT if ok else REFUSED)


async def serve(args: argparse.Namespace) -> int:
    tally = Tally(args.secret, args.expect, args.delay_ms / 1000)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(tally), "127.0.0.1", args.port, backlog=4096
    )
    print("ready", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.done.wait(), args.timeout)
    server.close()
    with args.out.open("w") as out:
        for received, due, fired in tally.rows:
            out.write(f"{received} {due} {fired}\n")
    if tally.bad:
        print(f"bad signatures: {tally.bad}", file=sys.stderr)
        return 2
    return 0 if len(tally.rows) >= args.expect else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.receiver")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--delay-ms", type=float, default=0.0, help="answer each request this late")
    return uvloop.run(serve(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
