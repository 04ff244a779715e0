"""Operator commands: status, pending, dead letters, one conversation, reshard.

The queries live in `tracker.ops` (the web console's `/admin` endpoints share them); this
module prints their answers, as text or JSON, and turns them into exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from typing import Any

import orjson
from redis.exceptions import RedisError

from tracker.ops import conversation as conversation_ops
from tracker.ops import dead_letters as dl
from tracker.ops import pending as pending_ops
from tracker.ops import status as status_ops
from tracker.ops.arguments import Since
from tracker.ops.text import clean, duration, size, table
from tracker.redis.connection import Client, redis_time_ms
from tracker.settings import Settings
from tracker.state.layout import read_layout
from tracker.state.store import Store

OK, FAILED, UNUSABLE = 0, 1, 2
PROGRESS_EVERY_S = 1.0


class Failed(Exception):
    """The command ran and cannot do what was asked: one line on stderr, exit `code`."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def _json(data: Any) -> None:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


async def _span(redis: Client, settings: Settings) -> list[int]:
    """Every shard that may hold data (both layouts' while a reshard runs)."""
    return list((await read_layout(redis, settings.shard_count)).shards())


# --- status ------------------------------------------------------------------------------


async def status(redis: Client, settings: Settings, *, as_json: bool, watch_s: float | None) -> int:
    if watch_s is None:
        report = await status_ops.report(redis, settings)
        _json(report) if as_json else print(status_text(report))
        return status_ops.exit_code(report)
    return await _watch(redis, settings, as_json=as_json, every_s=watch_s)


async def _watch(redis: Client, settings: Settings, *, as_json: bool, every_s: float) -> int:
    """Print the status every `every_s` until interrupted; exit with the last one's code.
    Redis unreachable is shown and watched through (exit code 2 while it lasts)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    clear = sys.stdout.isatty() and not as_json
    code = OK
    while not stop.is_set():
        try:
            report = await status_ops.report(redis, settings)
            code = status_ops.exit_code(report)
            text = orjson.dumps(report).decode() if as_json else status_text(report)
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            code = UNUSABLE
            message = f"cannot reach Redis: {exc}"
            text = orjson.dumps({"error": message}).decode() if as_json else message
        print(("\x1b[H\x1b[2J" if clear else "") + text, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
    return code


def is_redis_failure(exc: BaseException) -> bool:
    """Redis unreachable, or refusing: what the CLI reports in one line (exit 2)."""
    return isinstance(exc, RedisError | OSError)


def status_text(r: dict[str, Any]) -> str:
    layout = r["layout"]
    moving = "" if layout["previous"] is None else f", resharding from {layout['previous']}"
    lines = [f"tracker at {r['at']}: {'healthy' if r['healthy'] else 'DEGRADED'}"]
    lines += [f"  ! {clean(p)}" for p in r["problems"]]
    lines.append(f"shards: {layout['count']}{moving} (layout epoch {layout['epoch']})")
    lines.append(f"pods alive: {', '.join(clean(p) for p in r['pods']) or 'none'}")
    for node in r["redis"]:
        memory = size(node["used_memory"])
        if node["maxmemory"]:
            memory += f" of {size(node['maxmemory'])} ({node['maxmemory_policy']})"
        flags = [
            f for f, on in (("loading", node["loading"]), ("read-only", node["read_only"])) if on
        ]
        name = f" {node['node']}" if node["node"] else ""
        lines.append(
            f"redis{clean(name)}: {node['version']} {node['role']}, memory {memory}"
            + (f", {', '.join(flags)}" if flags else "")
        )
    t = r["totals"]
    lines.append(
        f"totals: waiting {t['waiting']}, backlog {t['backlog']}, pending {t['pending']}, "
        f"dead letters {t['dead_letters']}"
    )
    rows = [
        (
            s["shard"],
            s["leader"] or "NONE",
            s["waiting"],
            duration(max(s["oldest_overdue_ms"], s["backlog_overdue_ms"], s["pending_overdue_ms"]))
            if s["oldest_overdue_ms"] or s["backlog_overdue_ms"] or s["pending_overdue_ms"]
            else "-",
            "-" if s["backlog"] is None else s["backlog"],
            s["pending"],
            s["dead_letters"],
            f"refused (epoch {s['epoch']})" if s["refuses_writes"] else "ok",
        )
        for s in r["shards"]
    ]
    numbers = ("shard", "waiting", "overdue", "backlog", "pending", "dead_letters")
    columns = ("shard", "leader", *numbers[1:], "writes")
    lines.append(table(columns, rows, right=numbers))
    if r["roles"]:
        lines.append("roles of this pod (RUN_DIR):")
        role_rows = [
            (
                x["name"],
                x["pid"],
                x["state"],
                duration(x["progress_age_ms"]),
                f"{x['error_kind']}: {x['error']}" if x["error_kind"] else "",
            )
            for x in r["roles"]
        ]
        role_columns = ("name", "pid", "state", "last_progress", "error")
        lines.append(table(role_columns, role_rows, right=("pid",)))
    return "\n".join(lines)


# --- pending -----------------------------------------------------------------------------


async def pending(
    redis: Client, settings: Settings, *, shard: int | None, limit: int, as_json: bool
) -> int:
    shards = await _span(redis, settings)
    if shard is not None:
        if shard not in shards:
            raise Failed(f"no shard {shard}: the layout has shards 0..{len(shards) - 1}", UNUSABLE)
        shards = [shard]
    listing = await pending_ops.list_pending(redis, shards, limit)
    now = await redis_time_ms(redis)
    items = [p.to_json(now) for p in listing.items]
    if as_json:
        _json({"total": listing.total, "pending": items})
        return OK
    rows = [
        (
            p["id"],
            p["state"],
            p["conversation_id"],
            p["level"],
            p["due_at"],
            p["consumer"],
            duration(p["idle_ms"]),
            p["times_read"],
            p["attempts"],
            p["last_error"] or "",
        )
        for p in items
    ]
    columns = (
        *("id", "state", "conversation", "level", "due_at", "owner", "idle"),
        *("read", "attempts", "last_error"),
    )
    print(table(columns, rows, right=("level", "idle", "read", "attempts")))
    print(f"{len(items)} of {listing.total} pending entries (oldest first)")
    return OK


# --- dead letters ------------------------------------------------------------------------


async def dead_letters_list(
    redis: Client,
    settings: Settings,
    *,
    limit: int,
    conversation: str | None,
    since: Since | None,
    as_json: bool,
) -> int:
    since_ms = await since.resolve(redis) if since is not None else None
    shards = await _span(redis, settings)
    listing = await dl.list_dead_letters(
        redis, shards, limit, conversation=conversation, since_ms=since_ms
    )
    items = [d.to_json() for d in listing.items]
    if as_json:
        _json({"total": listing.total, "dead_letters": items})
        return OK
    for d in items:
        error = f"{d['reason']}: {d['last_error']}" if d["last_error"] else d["reason"]
        print(
            f"{d['id']}  dead-lettered {d['dead_lettered_at']}  attempts {clean(d['attempts'])}"
            f"  {clean(error)}"
        )
        body = d["notification"] or {"malformed": d["fields"]}
        print("  " + clean(orjson.dumps(body).decode()))
    print(f"{len(items)} shown of {listing.total} dead letters (newest first)")
    return OK


async def _named(redis: Client, settings: Settings, tokens: list[str]) -> list[dl.DeadLetter]:
    """The dead letters the operator named; every id must be one (else nothing is done)."""
    ids = _parse_ids(tokens)
    found = await dl.find(redis, await _span(redis, settings), ids)
    if found.unknown:
        raise Failed(f"no such dead letter: {', '.join(found.unknown)} (nothing done)")
    return found.letters


def _parse_ids(tokens: list[str]) -> dl.Ids:
    try:
        return dl.parse_ids(tokens)
    except dl.BadId as exc:
        raise Failed(str(exc), UNUSABLE) from None


async def dead_letters_replay(
    redis: Client, settings: Settings, *, ids: list[str], every: bool
) -> int:
    _ids_or_all(ids, every, "replay")
    report = ProgressLine("replay")
    if every:
        done = await dl.replay_all(redis, await _span(redis, settings), report)
    else:
        letters = await _named(redis, settings, ids)
        done = await dl.replay_letters(redis, letters, report)
    report.finish()
    print(f"replayed {len(done.replayed)}")
    for letter_id, why in done.refused.items():
        print(f"tracker: refused {letter_id}: {why}", file=sys.stderr)
    if done.gone:
        gone = ", ".join(done.gone)
        print(f"tracker: gone meanwhile (replayed or purged by another): {gone}", file=sys.stderr)
    return FAILED if done.refused or done.gone else OK


async def dead_letters_purge(
    redis: Client, settings: Settings, *, ids: list[str], every: bool, yes: bool
) -> int:
    _ids_or_all(ids, every, "purge")
    if every:
        if not yes:
            raise Failed("purging every dead letter needs --all --yes", UNUSABLE)
        print(f"purged {await dl.purge_all(redis, await _span(redis, settings))}")
        return OK
    letters = await _named(redis, settings, ids)
    purged = await dl.purge_letters(redis, letters)
    print(f"purged {purged}")
    if purged < len(letters):
        raise Failed(f"{len(letters) - purged} were gone meanwhile (purged by another)")
    return OK


def _ids_or_all(ids: list[str], every: bool, action: str) -> None:
    if every and ids:
        raise Failed(f"{action}: give ids or --all, not both", UNUSABLE)
    if not every and not ids:
        raise Failed(f"{action}: name dead-letter ids, or --all for every one", UNUSABLE)


class ProgressLine:
    """A progress line on stderr, at most every PROGRESS_EVERY_S, for long runs only."""

    def __init__(self, action: str) -> None:
        self.action = action
        self.next = time.monotonic() + PROGRESS_EVERY_S
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if time.monotonic() < self.next or done >= total:
            return
        self.next = time.monotonic() + PROGRESS_EVERY_S
        self.shown = True
        end = "\r" if sys.stderr.isatty() else "\n"
        print(f"{self.action}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.shown and sys.stderr.isatty():
            print(file=sys.stderr)


# --- one conversation, reshard -----------------------------------------------------------


async def conversation(
    redis: Client, settings: Settings, conversation_id: str, *, as_json: bool
) -> int:
    """Its state, each level's fate, its history, and its entries in the streams now."""
    report = await conversation_ops.report(Store(redis, settings), conversation_id)
    if report is None:
        raise Failed(f"no such conversation: {conversation_id}")
    _json(report) if as_json else print(conversation_text(report))
    return OK


def conversation_text(r: dict[str, Any]) -> str:
    c = r["conversation"]
    lines = [
        f"{clean(c['conversation_id'])} (shard {r['shard']}): {c['state']}, generation "
        f"{c['generation']}, waiting since {c['waiting_since']}, timeout {c['timeout_ms']} ms, "
        f"agent {clean(c['agent_id'])}, message {clean(c['message_id'])}"
        + (f", answered in {c['response_time_ms']} ms" if c["response_time_ms"] is not None else "")
    ]
    level_rows = [
        (
            v["level"],
            v["status"],
            v["due_at"],
            v["delivered_at"],
            ",".join(v["sinks"]) if v["sinks"] else None,
            v["attempts"],
            v["last_error"] or "",
        )
        for v in c.get("levels", [])
    ]
    level_columns = ("level", "status", "due_at", "delivered_at", "sinks", "attempts", "last_error")
    lines.append(table(level_columns, level_rows, right=("level", "attempts")))
    known = {"at", "kind", "generation", "level"}
    history_rows = [
        (
            h["at"],
            h["kind"],
            h["generation"],
            h.get("level"),
            "  ".join(f"{k}={_value(v)}" for k, v in h.items() if k not in known),
        )
        for h in r.get("history", [])
    ]
    lines.append("history (oldest first):")
    lines.append(table(("at", "kind", "gen", "level", "details"), history_rows, ("gen", "level")))
    stream_rows = [
        (
            e["kind"],
            e["id"],
            e["level"],
            e["due_at"],
            f"{e['reason']}: {e['last_error']}" if e["kind"] == "dead_letter" else e["consumer"],
        )
        for e in r["in_streams"]
    ]
    lines.append("in its streams now:" if stream_rows else "in its streams now: nothing")
    if stream_rows:
        columns = ("kind", "id", "level", "due_at", "consumer / reason")
        lines.append(table(columns, stream_rows, right=("level",)))
    return "\n".join(lines)


def _value(v: Any) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, list) else str(v)


async def reshard(redis: Client, settings: Settings, to: int, drain_timeout_s: float) -> int:
    from tracker.ops.reshard import Resharder

    return await Resharder(redis, settings, drain_timeout_s=drain_timeout_s).run(to)
