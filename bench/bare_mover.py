"""The physical limit of this box for the stream sink's job: redis-py and one Lua script that
moves what is due from a sorted set to a stream. No API, no leases, no re-check, no
acknowledgement, nothing to lose sleep over: a yardstick, not a design.

    python -m bench.bare_mover '{"port": 6379, "n": 100000, "windowMs": 1000,
                                 "cancelEvery": 2, "firstDueMs": ..., "stream": "out"}'

Prints one JSON line when everything left has been moved.
"""

from __future__ import annotations

import sys
import time

import orjson
import redis

from tracker.timefmt import format_ms

DUE = "bare:due"
BATCH = 1000
MOVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
for _, member in ipairs(due) do
  local c, at = string.match(member, '^([^|]*)|(.*)$')
  redis.call('XADD', KEYS[2], '*', 'conversation_id', c, 'due_at', at)
end
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return #due
"""


def main(argv: list[str]) -> int:
    cfg = orjson.loads(argv[0])
    client = redis.Redis(port=cfg["port"])
    n, window, first = cfg["n"], cfg["windowMs"], cfg["firstDueMs"]
    members = {
        f"bare-{i}|{format_ms(first + i * window // n)}": first + i * window // n for i in range(n)
    }
    pipe = client.pipeline(transaction=False)
    items = list(members.items())
    for i in range(0, n, BATCH):
        pipe.zadd(DUE, dict(items[i : i + BATCH]))
    pipe.execute()
    if cfg["cancelEvery"] > 0:
        cancelled = [m for m, _ in items[:: cfg["cancelEvery"]]]
        for i in range(0, len(cancelled), BATCH):
            pipe.zrem(DUE, *cancelled[i : i + BATCH])
        pipe.execute()
    move = client.register_script(MOVE)
    left = int(client.zcard(DUE))
    moved_total = 0
    while left:
        moved = int(move(keys=[DUE, cfg["stream"]], args=[BATCH]))
        left -= moved
        moved_total += moved
        if moved < BATCH:
            time.sleep(0.001)
    print(
        orjson.dumps(
            {"moved": n - len(items[:: cfg["cancelEvery"]] if cfg["cancelEvery"] else [])}
        ).decode()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
