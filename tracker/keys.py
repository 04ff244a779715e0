"""Every Redis key and channel name, and the conversation -> shard mapping.

All keys of one shard carry the hash tag ``{N}`` so that each shard's scripts
touch one Redis Cluster slot.
"""

from __future__ import annotations

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
    waiting: str
    states: str
    records: str
    retired: str
    events: str
    leader: str
    fence: str
    counters: str
    attempts: str
    dead_letters: str
    moving: str
    epoch: str

    @classmethod
    def of(cls, shard: int) -> ShardKeys:
        tag = f"{{{shard}}}"
        return cls(
            shard=shard,
            waiting=f"waiting_conversations:{tag}",
            states=f"notification_states:{tag}",
            records=f"conversations:{tag}",
            retired=f"retired_conversations:{tag}",
            events=f"timeout_events:{tag}",
            leader=f"timeout:leader:{tag}",
            fence=f"timeout:fence:{tag}",
            counters=f"metrics:timeouts:{tag}",
            attempts=f"delivery_attempts:{tag}",
            dead_letters=f"dead_letters:{tag}",
            moving=f"moving_conversations:{tag}",
            epoch=f"timeout:epoch:{tag}",
        )

    @property
    def for_writes(self) -> list[str]:
        """KEYS of the track and respond scripts."""
        return [self.records, self.waiting, self.states, self.retired, self.epoch]

    @property
    def for_recheck(self) -> list[str]:
        """KEYS of the recheck script."""
        return [self.records, self.moving]


def all_shards(shard_count: int) -> list[ShardKeys]:
    return [ShardKeys.of(n) for n in range(shard_count)]
