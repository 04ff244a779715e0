"""Pending work: the shard stream entries a consumer has read and not yet acknowledged,
with who holds each, for how long, how often it was tried and the last error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tracker.delivery.notification import Notification
from tracker.ops import entry_order, readable, readable_fields
from tracker.redis.connection import Client
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys
from tracker.timefmt import format_ms

#: The attempts hash's field of an entry's last failed attempt: ``<unix ms>|<sink>|<error>``.
LAST_SUFFIX = ":last"


@dataclass(frozen=True, slots=True)
class LastError:
    at_ms: int | None
    sink: str | None
    error: str

    @classmethod
    def parse(cls, raw: str) -> LastError:
        at, sink, error = [*raw.split("|", 2), "", ""][:3]
        if not at.isdigit():  # not the documented shape: show it whole
            return cls(None, None, readable(raw))
        return cls(int(at), readable(sink) or None, readable(error))


@dataclass(frozen=True, slots=True)
class PendingEntry:
    shard: int
    entry_id: str
    consumer: str
    idle_ms: int
    times_read: int  # XPENDING's delivery count: how often a consumer read or claimed it
    attempts: int  # failed delivery attempts counted in delivery_attempts:{N}
    last_error: LastError | None
    notification: Notification | None  # None: trimmed from the stream, or unparsable
    fields: dict[str, str] | None  # the raw entry when it could not be parsed

    @property
    def id(self) -> str:
        return f"{self.shard}-{self.entry_id}"

    def state(self, now_ms: int) -> str:
        """held (staged early, waiting for its due time), failing (an attempt failed),
        delivering, or gone (no longer in the stream)."""
        if self.notification is None:
            return "gone" if self.fields is None else "malformed"
        if self.notification.due_at_ms > now_ms:
            return "held"
        return "failing" if self.attempts or self.last_error else "delivering"

    def to_json(self, now_ms: int) -> dict[str, Any]:
        n = self.notification
        last = self.last_error
        return {
            "id": self.id,
            "shard": self.shard,
            "state": self.state(now_ms),
            "conversation_id": n.conversation_id if n else None,
            "level": n.level if n else None,
            "generation": n.generation if n else None,
            "event_id": n.event_id if n else None,
            "due_at": format_ms(n.due_at_ms) if n else None,
            "consumer": self.consumer,
            "idle_ms": self.idle_ms,
            "times_read": self.times_read,
            "attempts": self.attempts,
            "last_error": last.error if last else None,
            "last_error_sink": last.sink if last else None,
            "last_error_at": format_ms(last.at_ms) if last and last.at_ms is not None else None,
            **({"fields": readable_fields(self.fields)} if self.fields is not None else {}),
        }


@dataclass(frozen=True, slots=True)
class PendingListing:
    total: int  # pending entries in the shards asked, beyond the limit too
    items: list[PendingEntry]


async def list_pending(redis: Client, shards: Sequence[int], limit: int) -> PendingListing:
    """The oldest `limit` pending entries of `shards` together, oldest first."""
    total = 0
    found: list[PendingEntry] = []
    for shard in shards:
        k = ShardKeys.of(shard)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xpending(k.outbox, CONSUMER_GROUP)
            pipe.xpending_range(k.outbox, CONSUMER_GROUP, "-", "+", limit)
            summary, rows = await pipe.execute(raise_on_error=False)
        if isinstance(summary, Exception):  # no stream or no group yet: nothing pending
            continue
        total += int(summary["pending"])
        if rows:
            found += await _entries(redis, k, rows)
    found.sort(key=lambda p: (*entry_order(p.entry_id), p.shard))
    return PendingListing(total, found[:limit])


async def _entries(redis: Client, k: ShardKeys, rows: list[dict[str, Any]]) -> list[PendingEntry]:
    ids = [str(row["message_id"]) for row in rows]
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xrange(k.outbox, entry_id, entry_id)
        pipe.hmget(k.attempts, [*ids, *(i + LAST_SUFFIX for i in ids)])
        *entries, counters = await pipe.execute()
    out: list[PendingEntry] = []
    for i, (row, entry) in enumerate(zip(rows, entries, strict=True)):
        attempts, last = counters[i], counters[len(ids) + i]
        fields: dict[str, str] | None = entry[0][1] if entry else None
        notification = None
        if fields is not None:
            try:
                notification = Notification.from_entry(k.shard, ids[i], fields)
                fields = None
            except (KeyError, ValueError):
                pass
        out.append(
            PendingEntry(
                shard=k.shard,
                entry_id=ids[i],
                consumer=str(row["consumer"]),
                idle_ms=int(row["time_since_delivered"]),
                times_read=int(row["times_delivered"]),
                attempts=int(attempts) if attempts and attempts.isdigit() else 0,
                last_error=LastError.parse(last) if last else None,
                notification=notification,
                fields=fields,
            )
        )
    return out
