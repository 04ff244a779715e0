"""The delivery's Redis side: each script it runs, with its keys, its arguments and what its
reply means. The re-check asks the conversation's record whether a notification is still
due to go; the acknowledgement, a failed attempt and a dead letter each note in the
conversation's history what became of it; a delivery also logs one line (log_delivered).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import IntEnum, StrEnum
from typing import NamedTuple

from tracker.delivery.notification import Notification
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys
from tracker.redis.scripts import Arg, Call, Script

RECHECK = Script.load("recheck")
DELIVER_STREAM = Script.load("deliver_stream")
ACK = Script.load("ack")
ATTEMPT_FAILED = Script.load("attempt_failed")
DEAD_LETTER = Script.load("dead_letter")


class Verdict(IntEnum):
    """What the re-check says of a notification (prelude.lua's recheck_code)."""

    STALE = 0  # answered, or restarted by a newer agent message: acknowledge unsent
    SEND = 1  # current and due
    EARLY = 2  # not due yet on Redis's clock: hold it a little longer
    ELSEWHERE = 3  # not in this shard: a reshard moved the conversation, ask its new one
    SUPERSEDED = 4  # a higher level of the same period is due: acknowledge unsent


class Outcome(StrEnum):
    """What became of an acknowledged notification, as its history notes it."""

    DELIVERED = "D"
    SUPPRESSED = "U"
    SUPERSEDED = "P"


class Rechecked(NamedTuple):
    verdicts: list[Verdict]  # one per notification, in order
    now_ms: int  # Redis's clock: for the stream sink's path, the notifications' fired_at


def _rechecked(reply: list[int]) -> Rechecked:
    *codes, now = reply
    return Rechecked([Verdict(int(c)) for c in codes], int(now))


def recheck_call(
    shard: int, batch: Sequence[Notification], multipliers: Sequence[float]
) -> Call[Rechecked]:
    """Is each notification of `batch` still current and due, by the records of `shard`?"""
    k = ShardKeys.of(shard)
    args: list[Arg] = [*multipliers, *(n.recheck_arg for n in batch)]
    return Call(RECHECK, [k.records, k.moving, k.fired], args, _rechecked)


def deliver_stream_call(
    shard: int,
    batch: Sequence[Notification],
    *,
    stream: str,
    maxlen: int,
    multipliers: Sequence[float],
    had_attempts: bool,
) -> Call[Rechecked]:
    """The stream sink's whole delivery, off Redis Cluster: re-check each notification,
    XADD the current ones to `stream` (fired_at: Redis's clock) and acknowledge them with
    the stale and superseded ones. The history is noted afterwards (`ack_call` at_ms)."""
    k = ShardKeys.of(shard)
    keys = [k.records, k.moving, k.fired, k.outbox, k.attempts, stream]
    args: list[Arg] = [CONSUMER_GROUP, maxlen, *multipliers, int(had_attempts)]
    args += [a for n in batch for a in n.direct_args]
    return Call(DELIVER_STREAM, keys, args, _rechecked)


def ack_entry(n: Notification, outcome: Outcome, sinks: str = "") -> str:
    """One notification as the ack script takes it (`sinks`: where it was delivered)."""
    return f"{n.entry_id}|{n.conversation_id}|{n.generation}|{n.level}|{outcome}|{sinks}"


def ack_call(
    shard: int, entries: Sequence[str], *, had_attempts: bool, at_ms: int = 0
) -> Call[int]:
    """Acknowledge `entries` (`ack_entry`s of one shard), forget their failed attempts when
    they `had_attempts`, and note each outcome in its conversation's history at `at_ms`
    (0: now); how many were still pending."""
    k = ShardKeys.of(shard)
    keys = [k.outbox, k.attempts, k.history, k.records]
    args: list[Arg] = [CONSUMER_GROUP, int(had_attempts), at_ms, *entries]
    return Call(ACK, keys, args, int)


def attempt_failed_call(n: Notification, sink: str, error: str) -> Call[int]:
    """Count a failed attempt of `n` (and note it): the number of attempts so far."""
    k = ShardKeys.of(n.shard)
    args: list[Arg] = [n.entry_id, n.conversation_id, n.generation, n.level, sink, error]
    return Call(ATTEMPT_FAILED, [k.attempts, k.history, k.records], args, int)


def dead_letter_call(
    shard: int,
    entry_id: str,
    reason: str,
    attempts: int,
    fields: Sequence[tuple[str | bytes, str | bytes]],
    about: Notification | None = None,
) -> Call[str]:
    """Move an outbox entry to the dead letters with `fields` (and acknowledge it); noted
    in the history of the notification it is `about` (None: an entry that could not be
    read). The dead letter's id."""
    k = ShardKeys.of(shard)
    keys = [k.outbox, k.dead_letters, k.attempts, k.history, k.records]
    history = about.history_key if about is not None else ""
    args: list[Arg] = [CONSUMER_GROUP, entry_id, reason, attempts, history]
    args += [v for pair in fields for v in pair]
    return Call(DEAD_LETTER, keys, args, str)


def dead_letter_notification(n: Notification, reason: str, attempts: int) -> Call[str]:
    """Dead-letter a notification the sinks could not take, with its readable fields."""
    fields = list(n.readable_fields().items())
    return dead_letter_call(n.shard, n.entry_id, reason, attempts, fields, n)


#: One line a delivered notification, at DELIVERY_LOG_LEVEL (INFO, or DEBUG to quiet it).
delivered_log = logging.getLogger("tracker.delivery.delivered")


def log_delivered(level: int, delivered: Sequence[Notification], sinks: str, at_ms: float) -> None:
    """Log each delivered notification with its event_id, where it went and how late."""
    if not delivered or not delivered_log.isEnabledFor(level):
        return
    for n in delivered:
        delivered_log.log(
            level,
            "delivered event_id=%s conversation=%s level=%d sinks=%s late_ms=%d",
            n.event_id,
            n.conversation_id,
            n.level,
            sinks,
            max(0, at_ms - n.due_at_ms),
        )
