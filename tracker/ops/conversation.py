"""One conversation for an operator: its state, each level's fate, its history, and its
notifications still in Redis's streams (staged or being delivered, dead letters)."""

from __future__ import annotations

from typing import Any, cast

from tracker.delivery.notification import Entries, Notification
from tracker.model import conversation_json
from tracker.ops import entry_order
from tracker.ops.dead_letters import DeadLetter
from tracker.redis.connection import Client
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys
from tracker.state.store import Store
from tracker.timefmt import format_ms

STREAM_SCAN = 10_000  # newest entries of each stream looked through


async def report(store: Store, conversation_id: str) -> dict[str, Any] | None:
    """Its state with each level's fate (GET /conversations/{id}), its history (GET
    /conversations/{id}/history) and its entries in the streams now; None when unknown
    (never seen, or retired)."""
    view = await store.get(conversation_id)
    if view is None:
        return None
    shard = (await store.layout.get()).shard(conversation_id)
    return {
        "shard": shard,
        "conversation": conversation_json(view, store.levels(view)),
        "history": store.timeline(view),
        "in_streams": await in_streams(store.redis, shard, conversation_id),
    }


async def in_streams(redis: Client, shard: int, conversation_id: str) -> list[dict[str, Any]]:
    """Its entries still to be delivered: in the shard stream, unread or pending (read and
    not acknowledged: held until due, being delivered or retried), and among the shard's
    dead letters; oldest first. Acknowledged entries the stream still keeps are history."""
    k = ShardKeys.of(shard)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xrevrange(k.outbox, count=STREAM_SCAN)
        pipe.xrevrange(k.dead_letters, count=STREAM_SCAN)
        pipe.xpending_range(k.outbox, CONSUMER_GROUP, "-", "+", STREAM_SCAN)
        pipe.xinfo_groups(k.outbox)
        events, dead, pending, groups = await pipe.execute(raise_on_error=False)
    owners = {str(p["message_id"]): p for p in pending} if isinstance(pending, list) else {}
    group = (
        next((g for g in groups if g["name"] == CONSUMER_GROUP), None)
        if isinstance(groups, list)
        else None
    )
    last_read = entry_order(str(group["last-delivered-id"])) if group else (0, 0)
    out: list[dict[str, Any]] = []
    for entry_id, fields in cast(Entries, events if isinstance(events, list) else []):
        owner = owners.get(entry_id)
        if owner is None and entry_order(entry_id) <= last_read:
            continue  # acknowledged
        try:
            n = Notification.from_entry(shard, entry_id, fields)
        except ValueError:
            continue
        if n.conversation_id != conversation_id:
            continue
        out.append(
            {
                "kind": "pending" if owner else "unread",
                "id": f"{shard}-{entry_id}",
                "event_id": n.event_id,
                "level": n.level,
                "generation": n.generation,
                "due_at": format_ms(n.due_at_ms),
                "consumer": owner["consumer"] if owner else None,
            }
        )
    for entry_id, fields in cast(Entries, dead if isinstance(dead, list) else []):
        letter = DeadLetter(shard, entry_id, fields).to_json()
        notification = letter["notification"]
        if notification is None or notification["conversation_id"] != conversation_id:
            continue
        out.append(
            {
                "kind": "dead_letter",
                "id": letter["id"],
                "event_id": notification["event_id"],
                "level": notification["level"],
                "generation": letter["generation"],
                "due_at": notification["due_at"],
                "dead_lettered_at": letter["dead_lettered_at"],
                "reason": letter["reason"],
                "last_error": letter["last_error"],
            }
        )
    out.sort(key=lambda e: entry_order(str(e["id"]).split("-", 1)[1]))
    return out
