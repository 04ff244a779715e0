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
COUNT = 10_000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.reader")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    client = redis.Redis(port=args.port, decode_responses=True)
    rows: list[tuple[int, str, str]] = []
    last = "0-0"
    deadline = time.monotonic() + args.timeout
    while len(rows) < args.expect and time.monotonic() < deadline:
        reply: Any = client.xread({args.stream: last}, count=COUNT, block=BLOCK_MS)
        received = int(time.time() * 1000)  # one stamp a read: they arrived together
        for _, entries in reply or []:
            for entry_id, fields in entries:
                rows.append((received, fields.get("due_at", ""), fields.get("fired_at", "")))
                last = entry_id
    with args.out.open("w") as out:
        for received, due, fired in rows:
            fired_ms = parse_rfc3339_ms(fired) if fired else 0
            out.write(f"{received} {parse_rfc3339_ms(due)} {fired_ms}\n")
    return 0 if len(rows) >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
