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
    history: str

    @classmethod
    @functools.cache  # built once a shard: every script call on the hot paths asks
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
            history=f"history:{tag}",
        )

    @property
    def for_apply(self) -> list[str]:
        """KEYS of the apply script."""
        return [self.records, self.waiting, self.states, self.retired, self.epoch, self.history]

    @property
    def for_recheck(self) -> list[str]:
        """KEYS of the recheck script."""
        return [self.records, self.moving, self.states]

    @property
    def for_sweep(self) -> list[str]:
        """KEYS of the sweep script."""
        return [
            self.waiting,
            self.states,
            self.records,
            self.retired,
            self.events,
            self.leader,
            self.counters,
            self.history,
        ]

    @property
    def for_lease(self) -> list[str]:
        """KEYS of the lease_acquire script."""
        return [self.leader, self.fence]

    @property
    def for_take_out(self) -> list[str]:
        """KEYS of the migrate_out script (a reshard's first step, on the old shard)."""
        return [
            self.records,
            self.waiting,
            self.states,
            self.retired,
            self.moving,
            self.epoch,
            self.history,
        ]

    @property
    def for_place(self) -> list[str]:
        """KEYS of the migrate_in script (a reshard's second step, on the new shard)."""
        return [self.records, self.waiting, self.states, self.retired, self.history]

    @property
    def for_ack(self) -> list[str]:
        """KEYS of the ack script."""
        return [self.events, self.attempts, self.history, self.records]

    def for_deliver_stream(self, outbound: str) -> list[str]:
        """KEYS of the deliver_stream script, with the outbound stream's name."""
        return [self.records, self.moving, self.states, self.events, self.attempts, outbound]

    @property
    def for_attempt_failed(self) -> list[str]:
        """KEYS of the attempt_failed script."""
        return [self.attempts, self.history, self.records]

    @property
    def for_dead_letter(self) -> list[str]:
        """KEYS of the dead_letter script."""
        return [self.events, self.dead_letters, self.attempts, self.history, self.records]

    @property
    def for_replay(self) -> list[str]:
        """KEYS of the dead_letter_replay script."""
        return [self.dead_letters, self.events, self.history, self.records]


def all_shards(shard_count: int) -> list[ShardKeys]:
    return [ShardKeys.of(n) for n in range(shard_count)]
