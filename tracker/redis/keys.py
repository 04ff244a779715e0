"""Every Redis key and channel name, and the conversation -> shard mapping.

All keys of one shard carry the hash tag ``{N}`` so that each shard's scripts
touch one Redis Cluster slot.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

CONSUMER_GROUP = "delivery"
PODS = "timeout:pods"
#: The live shard layout (hash): count, previous (while a reshard moves conversations), epoch.
LAYOUT = "timeout:shards"
WAKE_CHANNEL_PREFIX = "timeout:wake:"


def shard_of(conversation_id: str, shard_count: int) -> int:
    """Stable shard of a conversation: CRC32 of its id, modulo the shard count."""
    return zlib.crc32(conversation_id.encode()) % shard_count


def shard_of_key(key: str) -> int:
    """The shard number in a key's hash tag: ``timeout_events:{7}`` -> 7."""
    return int(key[key.index("{") + 1 : key.index("}")])


def wake_channel(shard: int) -> str:
    return f"{WAKE_CHANNEL_PREFIX}{shard}"


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """The names of every key that belongs to one shard."""

    shard: int
    waiting: str  # each waiting conversation's next due time (the sweeper's index)
    fired: str  # the last level fired (staged) of each conversation's current period
    records: str  # the conversation records (tracker/lua/prelude.lua names the fields)
    retired: str  # finished records and histories, by when they are deleted
    outbox: str  # the notifications staged for delivery: a stream, one consumer group
    leader: str  # the shard's lease: holder pod and fencing token
    fence: str  # the last fencing token given out
    counters: str  # notifications fired per level (metrics:timeouts)
    attempts: str  # failed delivery attempts of outbox entries, and the last error
    dead_letters: str  # notifications given up on, replayable
    moving: str  # conversations taken out by a reshard, not yet placed in their new shard
    epoch: str  # the highest shard layout epoch this shard has seen
    history: str  # each conversation's delivery history (tracker/state/history.py)

    @classmethod
    @functools.cache  # built once a shard: every script call on the hot paths asks
    def of(cls, shard: int) -> ShardKeys:
        tag = f"{{{shard}}}"
        return cls(
            shard=shard,
            waiting=f"waiting_conversations:{tag}",
            fired=f"notification_states:{tag}",
            records=f"conversations:{tag}",
            retired=f"retired_conversations:{tag}",
            outbox=f"timeout_events:{tag}",
            leader=f"timeout:leader:{tag}",
            fence=f"timeout:fence:{tag}",
            counters=f"metrics:timeouts:{tag}",
            attempts=f"delivery_attempts:{tag}",
            dead_letters=f"dead_letters:{tag}",
            moving=f"moving_conversations:{tag}",
            epoch=f"timeout:epoch:{tag}",
            history=f"history:{tag}",
        )
