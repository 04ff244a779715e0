"""What happened to one conversation: its history entries as the scripts write them
(``history:{N}``), each level's fate in the current waiting period, and the timeline that
`GET /conversations/{id}/history` and `tracker conversation` show.

An entry is one line, ``kind|at ms|generation|...``, written by:

====  =====================  ================================================  ====================
kind  meaning                the rest                                          written by
====  =====================  ================================================  ====================
S     an earlier period      interval ms|agent id|agent message id (at: since) apply.lua (restart)
A     its answer             response ms|customer message id                   apply.lua (restart)
D     delivered              level|sinks (',')|staged at ms                    ack.lua
U     suppressed             level (answered or restarted before it was sent)  ack.lua
P     superseded             level (a higher level of the period was due)      ack.lua
F     a failed attempt       level|sink|error                                  attempt_failed.lua
X     dead-lettered          level|reason                                      dead_letter.lua
R     replayed               level (from the dead letters)                     replay
K     skipped                level (caught up by a higher one)                 sweep.lua
====  =====================  ================================================  ====================

The current period (and its answer) is the conversation's record, not an entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tracker.delivery.notification import event_id
from tracker.model import Entry, Level, Period
from tracker.timefmt import format_ms

#: Entry kinds that end a level's story, and what a level's status then is.
OUTCOMES = {"D": "delivered", "X": "dead_lettered", "P": "superseded", "U": "suppressed"}
KINDS = {
    "S": "started",
    "A": "answered",
    "D": "delivered",
    "U": "suppressed",
    "P": "superseded",
    "F": "attempt_failed",
    "X": "dead_lettered",
    "R": "replayed",
    "K": "skipped",
}


def parse(raw: str | None) -> list[Entry]:
    """The entries of one conversation's history, oldest first (unreadable lines skipped)."""
    entries: list[Entry] = []
    for line in (raw or "").split("\n"):
        parts = line.split("|")
        if len(parts) < 3 or parts[0] not in KINDS:
            continue
        try:
            entries.append(Entry(parts[0], int(parts[1]), int(parts[2]), tuple(parts[3:])))
        except ValueError:
            continue
    return entries


def levels(
    conversation_id: str,
    period: Period,
    offsets_ms: Sequence[int],
    fired: int,
    answered: bool,
    entries: Iterable[Entry],
    now_ms: int,
) -> list[Level]:
    """Each level of the current period: ``scheduled`` (not staged yet), ``staged`` (in its
    stream, not due), ``pending`` (due, not delivered yet: attempts and last error so far),
    ``delivered`` (when, to which sinks), ``dead_lettered``, ``suppressed`` (answered or
    restarted before it was sent), ``superseded`` (a higher level was due first),
    ``skipped`` (caught up by a higher level), ``cancelled`` (answered before it was sent)."""
    mine = [e for e in entries if e.generation == period.generation and e.level is not None]
    out: list[Level] = []
    for level, offset in enumerate(offsets_ms, 1):
        due = period.since_ms + offset
        about = [e for e in mine if e.level == level]
        failed = [e for e in about if e.kind == "F"]
        level_view = Level(
            level,
            due,
            _status(level, due, fired, answered, about, now_ms),
            event_id(conversation_id, period.since_ms, level),
            attempts=len(failed),
            last_error=failed[-1].rest[2] if failed and len(failed[-1].rest) > 2 else None,
        )
        delivered = next((e for e in about if e.kind == "D"), None)
        if delivered is not None:
            sinks = tuple(delivered.rest[1].split(",")) if len(delivered.rest) > 1 else ()
            level_view = dataclasses.replace(level_view, delivered_ms=delivered.at_ms, sinks=sinks)
        elif level_view.status == "dead_lettered":
            dead = next(e for e in reversed(about) if e.kind == "X")
            reason = dead.rest[1] if len(dead.rest) > 1 else None
            level_view = dataclasses.replace(level_view, last_error=reason)
        out.append(level_view)
    return out


def _status(
    level: int, due: int, fired: int, answered: bool, about: list[Entry], now_ms: int
) -> str:
    last = next((e.kind for e in reversed(about) if e.kind in OUTCOMES or e.kind == "R"), None)
    if last is not None and last != "R":  # replayed: its story goes on
        return OUTCOMES[last]
    if last is None and any(e.kind == "K" for e in about):
        return "skipped"
    if answered:
        return "cancelled"  # anything not sent yet is suppressed at its re-check
    if level > fired:
        return "scheduled"
    return "staged" if due > now_ms else "pending"


def timeline(
    conversation_id: str,
    current: Period,
    answer: tuple[int, int, str] | None,
    entries: Sequence[Entry],
    offsets: Callable[[int], Sequence[int]],
) -> list[dict[str, Any]]:
    """Every entry as JSON, oldest first, with the current period's start and `answer`
    (answered at ms, response ms, customer message id) from the record."""
    periods = {current.generation: current}
    for e in entries:
        if e.kind == "S" and len(e.rest) >= 3:
            periods[e.generation] = Period(e.generation, e.at_ms, int(e.rest[0]), *e.rest[1:3])
    items = [e for e in entries if e.kind != "S"]
    out = [_started(p) for p in sorted(periods.values(), key=lambda p: p.generation)]
    out += [_item(conversation_id, e, periods.get(e.generation), offsets) for e in items]
    if answer is not None:
        at, response, message = answer
        out.append(
            {
                "at": format_ms(at),
                "kind": "answered",
                "generation": current.generation,
                "response_time_ms": response,
                "message_id": message,
            }
        )
    return sorted(out, key=lambda item: (item["at"], _ORDER.index(item["kind"])))


#: Among entries of the same millisecond, the order things happen in.
_ORDER = (
    "started",
    "restarted",
    "skipped",
    "attempt_failed",
    "dead_lettered",
    "replayed",
    "delivered",
    "suppressed",
    "superseded",
    "answered",
)


def _started(p: Period) -> dict[str, Any]:
    return {
        "at": format_ms(p.since_ms),
        "kind": "started" if p.generation == 1 else "restarted",
        "generation": p.generation,
        "agent_id": p.agent_id,
        "message_id": p.message_id,
        "timeout_ms": p.interval_ms,
    }


def _item(
    conversation_id: str,
    e: Entry,
    period: Period | None,
    offsets: Callable[[int], Sequence[int]],
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "at": format_ms(e.at_ms),
        "kind": KINDS[e.kind],
        "generation": e.generation,
    }
    if e.kind == "A":
        item["response_time_ms"] = int(e.rest[0]) if e.rest and e.rest[0].isdigit() else None
        item["message_id"] = e.rest[1] if len(e.rest) > 1 else None
        return item
    level = e.level
    item["level"] = level
    if period is not None and level is not None:
        item["event_id"] = event_id(conversation_id, period.since_ms, level)
        item["due_at"] = format_ms(period.since_ms + offsets(period.interval_ms)[level - 1])
    if e.kind == "D" and len(e.rest) >= 3:
        item["sinks"] = e.rest[1].split(",")
        item["staged_at"] = format_ms(int(e.rest[2]))
    elif e.kind == "F" and len(e.rest) >= 3:
        item["sink"], item["error"] = e.rest[1], e.rest[2]
    elif e.kind == "X" and len(e.rest) >= 2:
        item["reason"] = e.rest[1]
    return item
