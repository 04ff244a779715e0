"""Notifications: built from a shard outbox entry, identified deterministically (event_id,
the contract's name for a notification's id)."""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import orjson

from tracker.timefmt import format_ms

#: A stream's entries as redis-py returns them: (entry id, fields).
Entries = list[tuple[str, dict[str, str]]]

#: A shard stream entry's one field, and a dead letter's fields, in the order of the values.
PACKED = "e"
READABLE = ("c", "l", "g", "s", "d", "a", "m")
#: The fields of a notification, in the order of the outbound stream's entries.
OUTBOUND = (
    "event_id",
    "conversation_id",
    "level",
    "agent_id",
    "message_id",
    "waiting_since",
    "due_at",
    "fired_at",
)


class MalformedEntry(ValueError):
    """A stream entry that is not a notification the tracker wrote."""


def event_id(conversation_id: str, waiting_since_ms: int, level: int) -> str:
    """The same conversation, waiting-since and level always give the same id."""
    digest = hashlib.sha256(f"{conversation_id}|{waiting_since_ms}|{level}".encode()).hexdigest()
    return f"evt_{digest[:32]}"


class Notification(NamedTuple):
    """One due level of one conversation, as it travels from the stream to the sinks."""

    entry_id: str
    shard: int
    conversation_id: str
    level: int
    generation: int
    agent_id: str
    message_id: str
    waiting_since_ms: int
    due_at_ms: int
    #: The notification's values but fired_at: made when the entry is read (before the due time,
    #: with prefetch), so that sending costs little.
    known_values: tuple[str, ...] = ()
    #: This notification as deliver_stream.lua takes it, made when the entry is read too.
    direct_args: tuple[str, ...] = ()

    @classmethod
    def from_entry(cls, shard: int, entry_id: str, fields: dict[str, str]) -> Notification:
        """From a shard stream entry (one field, ``e``: the values joined by '|', as the sweep
        script writes them) or a dead letter (one field per value, readable); MalformedEntry
        when the entry is not one the tracker wrote."""
        packed = fields.get(PACKED)
        if packed is not None:
            values = packed.split("|")
        elif all(f in fields for f in READABLE):
            values = [fields[f] for f in READABLE]
        else:
            raise MalformedEntry(f"fields {sorted(fields)[:8]} are not a notification's")
        if len(values) != len(READABLE):
            raise MalformedEntry(f"{len(values)} values, not {len(READABLE)}")
        c, level, gen, since, due, agent, message = values
        if not all(v and v.isascii() and v.isprintable() for v in (c, agent, message)):
            raise MalformedEntry("a conversation, agent or message id that is not printable")
        if level not in ("1", "2", "3"):
            raise MalformedEntry(f"level {level[:20]!r} is not 1, 2 or 3")
        if not (gen.isdigit() and since.isdigit() and due.isdigit()):
            raise MalformedEntry("generation, waiting-since and due must be whole numbers")
        n = cls(entry_id, shard, c, int(level), int(gen), agent, message, int(since), int(due))
        known = n.values_before_firing()
        eid, _, _, _, _, since_at, due_at = known
        direct = (entry_id, c, gen, due, level, eid, agent, message, since_at, due_at)
        return n._replace(known_values=known, direct_args=direct)

    def _entry_values(self) -> tuple[str, ...]:
        """The shard stream entry's values, in READABLE order."""
        values = (
            self.conversation_id,
            self.level,
            self.generation,
            self.waiting_since_ms,
            self.due_at_ms,
            self.agent_id,
            self.message_id,
        )
        return tuple(str(v) for v in values)

    def entry_fields(self) -> dict[str, str]:
        """The shard stream entry, as the sweep script writes it."""
        return {PACKED: "|".join(self._entry_values())}

    def readable_fields(self) -> dict[str, str]:
        """One field per value: what a dead letter holds, for operators to read."""
        return dict(zip(READABLE, self._entry_values(), strict=True))

    @property
    def event_id(self) -> str:
        return event_id(self.conversation_id, self.waiting_since_ms, self.level)

    @property
    def recheck_arg(self) -> str:
        """This notification as the recheck script takes it."""
        return f"{self.conversation_id}|{self.generation}|{self.due_at_ms}|{self.level}"

    @property
    def history_key(self) -> str:
        """Conversation, generation and level, as the scripts that note history take them."""
        return f"{self.conversation_id}|{self.generation}|{self.level}"

    def values_before_firing(self) -> tuple[str, ...]:
        """The notification's values in OUTBOUND order, fired_at left out."""
        return (
            self.event_id,
            self.conversation_id,
            str(self.level),
            self.agent_id,
            self.message_id,
            format_ms(self.waiting_since_ms),
            format_ms(self.due_at_ms),
        )

    def outgoing(self, fired_at_ms: int, fired_at: str | None = None) -> Outgoing:
        """Ready to send; `fired_at` is `fired_at_ms` formatted, when the caller has it."""
        return Outgoing(self, fired_at_ms, fired_at or format_ms(fired_at_ms))

    def outbound_values(self, fired_at: str) -> tuple[str, ...]:
        """Every value of the notification, in OUTBOUND order."""
        return (*(self.known_values or self.values_before_firing()), fired_at)


class Outgoing(NamedTuple):
    """A notification ready for the sinks."""

    notification: Notification
    fired_at_ms: int
    fired_at: str

    @property
    def payload(self) -> dict[str, Any]:
        """The notification as JSON sends it: the outbound stream's fields, the level a number."""
        payload: dict[str, Any] = dict(
            zip(OUTBOUND, self.notification.outbound_values(self.fired_at), strict=True)
        )
        payload["level"] = self.notification.level
        return payload

    def body(self) -> bytes:
        """The payload as JSON, for the sinks that send it whole (the stream sink does not)."""
        return orjson.dumps(self.payload)
