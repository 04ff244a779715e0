"""The progress watchdog: the sweeper records when it last swept each shard it leads;
the API's /ready fails when one of them has not been swept recently."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import orjson

from tracker.settings import Settings

FILE_NAME = "sweeper-progress.json"


def _path(settings: Settings) -> Path:
    return settings.run_dir / FILE_NAME


def watchdog_ms(settings: Settings) -> int:
    """How long a led shard may go unswept before /ready fails."""
    return max(3 * settings.check_interval_ms, 2000)


def write(settings: Settings, last_sweep_ms: dict[int, int]) -> None:
    """Atomically replace the progress file (shard -> unix ms of its last sweep)."""
    path = _path(settings)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    data = {"written_ms": int(time.time() * 1000), "shards": last_sweep_ms}
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS))
    tmp.replace(path)


def clear(settings: Settings) -> None:
    with contextlib.suppress(FileNotFoundError):
        _path(settings).unlink()


def led_shards(settings: Settings, now_ms: int) -> dict[int, int]:
    """The shards this pod's sweeper leads -> unix ms of its last sweep of each."""
    try:
        data = orjson.loads(_path(settings).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}
    if now_ms - int(data["written_ms"]) > settings.leader_ttl_ms:
        return {}  # leases written then have expired: this pod leads nothing it reported
    return {int(s): int(t) for s, t in data["shards"].items()}


def stale_shards(settings: Settings) -> list[int]:
    """Shards this pod leads that were not swept within the watchdog window."""
    now = int(time.time() * 1000)
    limit = watchdog_ms(settings)
    return sorted(s for s, t in led_shards(settings, now).items() if now - t > limit)
