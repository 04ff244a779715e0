"""The domain: what the API takes in (events), what it answers (results), what one
conversation looks like (its record, its levels, its history), and their JSON views. The
API, the store and the operator commands all import from here; nothing here talks to
Redis or to HTTP.

Words (the README's glossary says more):
- an **event** is what a client reports: an agent message or a customer response;
- a **period** is one waiting period of a conversation, from an agent message to the
  answer or the next agent message; its **generation** counts them (1, 2, ...);
- a **level** (1..LEVELS) is one step of escalation; it is **staged** when the sweeper
  puts its notification in the shard's outbox (up to PREFETCH_MS early), **fired** when
  its due time has come, **delivered** when every sink accepted it;
- a **notification** is what the tracker sends for a level (tracker/delivery); its id
  is the ``event_id`` of DESIGN.md, the receivers' dedupe key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tracker.timefmt import format_ms

#: Conversation, agent, customer and message ids: short printable tokens.
ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))


def valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


class AgentMessage(NamedTuple):
    """An agent wrote: the clock starts (or restarts) for the conversation."""

    conversation_id: str
    agent_id: str
    message_id: str
    timestamp_ms: int  # 0: now, by Redis's clock
    timeout_ms: int | None = None  # None: TIMEOUT_INTERVAL_MS


class CustomerResponse(NamedTuple):
    """The customer answered: the clock stops and the response time is recorded."""

    conversation_id: str
    customer_id: str
    message_id: str
    timestamp_ms: int  # 0: now, by Redis's clock


Event = AgentMessage | CustomerResponse


class TrackResult(NamedTuple):
    """What an agent message did: started, restarted, duplicate or stale."""

    status: str
    generation: int
    waiting_since_ms: int
    next_due_ms: int | None


class RespondResult(NamedTuple):
    """What a customer response did: answered, duplicate, stale or not_waiting."""

    status: str
    response_time_ms: int | None
    generation: int


Result = TrackResult | RespondResult

#: A record's state letter, as the scripts write it, and its name.
RECORD_STATES = {"W": "waiting", "E": "escalated", "A": "answered"}


class Record(NamedTuple):
    """A conversation record as the scripts keep it: one string, fields joined by '|', in
    this order (tracker/lua/prelude.lua names the same positions)."""

    state: str  # a RECORD_STATES letter
    generation: str
    since_ms: str  # waiting since
    interval_ms: str  # the period's timeout interval
    agent_id: str
    message_id: str  # the agent message that started the period
    newest_ms: str  # timestamp of the newest event applied
    seen: str  # earlier message ids, ',' separated, newest first
    answer_message_id: str  # the customer message that answered the period ('' none)
    response_ms: str  # response time ('' none)

    @classmethod
    def parse(cls, raw: str) -> Record:
        return cls(*raw.split("|", len(cls._fields) - 1))


#: Fields of a record.
RECORD_FIELDS = len(Record._fields)


@dataclass(frozen=True, slots=True)
class Period:
    """One waiting period: the record's current one, or an earlier one from its history."""

    generation: int
    since_ms: int
    interval_ms: int
    agent_id: str
    message_id: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a conversation's history (tracker/state/history.py lists the kinds)."""

    kind: str
    at_ms: int
    generation: int
    rest: tuple[str, ...]

    @property
    def level(self) -> int | None:
        """The level an entry is about (None for S and A)."""
        return int(self.rest[0]) if self.kind not in "SA" and self.rest else None


@dataclass(frozen=True, slots=True)
class Level:
    """One level of the current period, as GET shows it."""

    level: int
    due_ms: int
    status: str
    event_id: str
    delivered_ms: int | None = None
    sinks: tuple[str, ...] | None = None
    attempts: int = 0
    last_error: str | None = None

    def json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "due_at": format_ms(self.due_ms),
            "status": self.status,
            "event_id": self.event_id,
            "delivered_at": format_ms(self.delivered_ms) if self.delivered_ms else None,
            "sinks": list(self.sinks) if self.sinks is not None else None,
            "attempts": self.attempts,
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class Conversation:
    """What one conversation looks like now (the GET view)."""

    conversation_id: str
    state: str
    generation: int
    waiting_since_ms: int
    timeout_ms: int
    agent_id: str
    message_id: str
    level_fired: int  # the highest level whose due time has come and that was fired
    next_due_ms: int | None
    response_time_ms: int | None
    staged: int = 0  # the highest level fired or staged (PREFETCH_MS) in this period
    answered_at_ms: int | None = None
    answer_message_id: str | None = None
    history: tuple[Entry, ...] = ()
    now_ms: int = field(default=0, compare=False)  # Redis's clock when it was read

    @property
    def period(self) -> Period:
        return Period(
            self.generation, self.waiting_since_ms, self.timeout_ms, self.agent_id, self.message_id
        )


def result_json(conversation_id: str, result: Result) -> dict[str, Any]:
    if isinstance(result, RespondResult):
        return {
            "conversation_id": conversation_id,
            "status": result.status,
            "generation": result.generation,
            "response_time_ms": result.response_time_ms,
        }
    return {
        "conversation_id": conversation_id,
        "status": result.status,
        "generation": result.generation,
        "waiting_since": format_ms(result.waiting_since_ms),
        "next_due_at": format_ms(result.next_due_ms) if result.next_due_ms is not None else None,
    }


def conversation_json(c: Conversation, levels: list[Level]) -> dict[str, Any]:
    delivered = [v.level for v in levels if v.status == "delivered"]
    return {
        "conversation_id": c.conversation_id,
        "state": c.state,
        "generation": c.generation,
        "agent_id": c.agent_id,
        "message_id": c.message_id,
        "waiting_since": format_ms(c.waiting_since_ms),
        "timeout_ms": c.timeout_ms,
        "level_fired": c.level_fired,
        "level_delivered": max(delivered, default=0),
        "next_due_at": format_ms(c.next_due_ms) if c.next_due_ms is not None else None,
        "response_time_ms": c.response_time_ms,
        "levels": [v.json() for v in levels],
    }
