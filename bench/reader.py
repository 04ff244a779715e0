"""Where the user is, for the stream sink: a separate process that reads the outbound stream
as a downstream service would (XREAD BLOCK) and stamps each entry when it gets it.

    python -m bench.reader --port 6379 --stream NAME --expect N --out FILE [--timeout S]

Writes one line per entry to FILE: ``received_ms due_ms fired_ms`` (fired_ms 0 when the
entry has no fired_at), then exits; exit 1 when fewer than N arrived in time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import redis

from tracker.timefmt import parse_rfc3339_ms

BLOCK_MS = 100
COUNT = 1000  # small reads: each entry is stamped when the read that got it returns


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.reader")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    # A raw connection: replies stay hiredis's lists of bytes (no per-entry dicts), so the
    # reader keeps up with the stream and stamps what it reads when it reads it.
    conn = redis.Connection(port=args.port, protocol=2)  # type: ignore[no-untyped-call]
    conn.connect()  # type: ignore[no-untyped-call]
    rows: list[tuple[int, list[bytes]]] = []
    last: bytes | str = "0-0"
    deadline = time.monotonic() + args.timeout
    while len(rows) < args.expect and time.monotonic() < deadline:
        xread = ("XREAD", "COUNT", COUNT, "BLOCK", BLOCK_MS, "STREAMS", args.stream, last)
        conn.send_command(*xread)  # type: ignore[no-untyped-call]
        reply: Any = conn.read_response()
        received = int(time.time() * 1000)  # one stamp a read: they arrived together
        for _, entries in reply or []:
            for entry_id, fields in entries:
                rows.append((received, fields))
                last = entry_id
    conn.disconnect()  # type: ignore[no-untyped-call]
    with args.out.open("w") as out:
        for received, fields in rows:
            values = dict(zip(fields[0::2], fields[1::2], strict=True))
            fired = values.get(b"fired_at")
            fired_ms = parse_rfc3339_ms(fired.decode()) if fired else 0
            out.write(f"{received} {parse_rfc3339_ms(values[b'due_at'].decode())} {fired_ms}\n")
    return 0 if len(rows) >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
