"""What each role process of this pod is doing, for `/ready` and `tracker status`.

Every role process (sweeper, consumers) keeps one small JSON file in ``RUN_DIR/roles/``:
when its loop last completed a round (progress), and the Redis error it is backing off
from, if any. Files are rewritten at most every WRITE_S, and at once when the error state
changes, so a reader sees an outage within a second and a healthy loop costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from tracker.settings import Settings

DIR_NAME = "roles"
WRITE_S = 0.5


@dataclass(frozen=True, slots=True)
class RoleState:
    """One role process as its file says."""

    name: str
    pid: int
    started_ms: int
    progress_ms: int  # unix ms of the last completed loop round (0: none yet)
    written_ms: int
    error_kind: str | None  # the Redis error being backed off from (None: healthy)
    error: str | None
    error_since_ms: int | None


def _dir(settings: Settings) -> Path:
    return settings.run_dir / DIR_NAME


class Heartbeat:
    """The file of one role process (`name`: e.g. ``sweeper``, ``consumer-0``)."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.path = _dir(settings) / f"{name}.json"
        self.name = name
        self.started_ms = _now_ms()
        self.progress_ms = 0
        self.error_kind: str | None = None
        self.error: str | None = None
        self.error_since_ms: int | None = None
        self.next_write = 0.0

    def progress(self) -> None:
        """A loop round completed: Redis answered."""
        self.progress_ms = _now_ms()
        changed = self.error_kind is not None
        self.error_kind = self.error = self.error_since_ms = None
        self._write(force=changed)

    def failed(self, kind: str, error: str) -> None:
        """A loop round met a Redis error and backs off."""
        changed = kind != self.error_kind
        if changed:
            self.error_since_ms = _now_ms()
        self.error_kind, self.error = kind, error[:200]
        self._write(force=changed)

    def _write(self, *, force: bool) -> None:
        clock = time.monotonic()
        if not force and clock < self.next_write:
            return
        self.next_write = clock + WRITE_S
        data = {
            "name": self.name,
            "pid": os.getpid(),
            "started_ms": self.started_ms,
            "progress_ms": self.progress_ms,
            "written_ms": _now_ms(),
            "error_kind": self.error_kind,
            "error": self.error,
            "error_since_ms": self.error_since_ms,
        }
        with contextlib.suppress(OSError):  # a full or read-only RUN_DIR must not stop a role
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(orjson.dumps(data))
            tmp.replace(self.path)

    def clear(self) -> None:
        """The process stops: its file goes."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def read_all(settings: Settings) -> list[RoleState]:
    """Every role file of this pod (a process that died without clearing its file too:
    compare `written_ms` with the clock)."""
    states: list[RoleState] = []
    directory = _dir(settings)
    if not directory.is_dir():
        return states
    for path in sorted(directory.glob("*.json")):
        try:
            data = orjson.loads(path.read_bytes())
            states.append(RoleState(**data))
        except (OSError, orjson.JSONDecodeError, TypeError):
            continue  # being replaced, or not ours
    return states


def _now_ms() -> int:
    return int(time.time() * 1000)
