"""Dead letters: named by shard and entry id or by event id; listed, replayed, purged.

A dead letter's id names its shard (``7-1795975119440-0``: shard 7, stream entry
``1795975119440-0``), because stream ids repeat across shards. An event id
(``evt_...``) names every dead letter of that notification.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from tracker.delivery.notification import OUTBOUND, PACKED, Entries, Notification
from tracker.ops import entry_order, readable, readable_fields
from tracker.redis.connection import Client
from tracker.redis.keys import ShardKeys
from tracker.redis.scripts import Call, Script, run
from tracker.timefmt import format_ms

REPLAY = Script.load("dead_letter_replay")


def replay_call(shard: int, letters: Sequence[tuple[str, str]]) -> Call[list[str | None]]:
    """Put dead letters (entry id, packed notification) back on the shard's outbox, each at
    most once: per letter, its new outbox entry id, or None when it is gone."""
    k = ShardKeys.of(shard)
    args = [PACKED, *(v for letter in letters for v in letter)]
    return Call(REPLAY, [k.dead_letters, k.outbox, k.history, k.records], args, _ids)


def _ids(reply: list[str | None]) -> list[str | None]:
    return [r if r else None for r in reply]


ID_FORMS = "SHARD-MS-SEQ (e.g. 7-1795975119440-0) or an event id (evt_ and 32 hex digits)"
PAGE = 500  # entries read, or replayed in one script call, at a time
MAX_STREAM_PART = 2**64 - 1

_SHARD_ID = re.compile(r"(\d{1,5})-(\d{1,20})-(\d{1,20})")
_EVENT_ID = re.compile(r"evt_[0-9a-f]{32}")

#: (done, total): called after each replayed page.
Progress = Callable[[int, int], None]


class BadId(ValueError):
    """A token that is neither form of a dead-letter id."""


@dataclass(frozen=True, slots=True)
class Ids:
    """What the operator named: (shard, entry id) pairs and event ids."""

    entries: tuple[tuple[int, str], ...] = ()
    events: frozenset[str] = frozenset()


def parse_ids(tokens: Iterable[str]) -> Ids:
    entries: list[tuple[int, str]] = []
    events: set[str] = set()
    for token in tokens:
        token = token.strip()
        if _EVENT_ID.fullmatch(token):
            events.add(token)
            continue
        match = _SHARD_ID.fullmatch(token)
        if match is None or max(int(match[2]), int(match[3])) > MAX_STREAM_PART:
            raise BadId(f"not a dead-letter id: {token!r} (expected {ID_FORMS})")
        entries.append((int(match[1]), f"{int(match[2])}-{int(match[3])}"))
    return Ids(tuple(dict.fromkeys(entries)), frozenset(events))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    shard: int
    entry_id: str
    fields: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.shard}-{self.entry_id}"

    @property
    def dead_lettered_ms(self) -> int:
        return int(self.entry_id.split("-", 1)[0])

    @property
    def notification(self) -> Notification | None:
        """The notification it holds; None for an entry that could not be parsed."""
        if self.fields.get("reason", "").startswith("malformed"):
            return None
        try:
            return Notification.from_entry(self.shard, self.entry_id, self.fields)
        except (KeyError, ValueError):
            return None

    def to_json(self) -> dict[str, Any]:
        reason, _, error = readable(self.fields.get("reason", "")).partition(": ")
        attempts = self.fields.get("attempts", "")
        n = self.notification
        data: dict[str, Any] = {
            "id": self.id,
            "shard": self.shard,
            "dead_lettered_at": format_ms(self.dead_lettered_ms),
            "reason": reason or None,
            "last_error": error or None,
            "attempts": int(attempts) if attempts.isdigit() else None,
            "source_id": readable(self.fields.get("source_id", "")) or None,
            "malformed": n is None,
        }
        if n is None:
            data["notification"] = None
            data["fields"] = readable_fields(self.fields)  # as they were: trust nothing in them
            return data
        notification: dict[str, Any] = dict(
            zip(OUTBOUND[:-1], n.values_before_firing(), strict=True)
        )
        notification["level"] = n.level
        data["notification"] = notification
        data["generation"] = n.generation
        return data


@dataclass(frozen=True, slots=True)
class Listing:
    total: int  # dead letters in every shard, filters aside
    items: list[DeadLetter]


async def _page(redis: Client, key: str, high: str, low: str, count: int) -> Entries:
    return cast(Entries, await redis.xrevrange(key, high, low, count=count))


async def list_dead_letters(
    redis: Client,
    shards: Sequence[int],
    limit: int,
    *,
    conversation: str | None = None,
    since_ms: int | None = None,
) -> Listing:
    """The newest `limit` dead letters of every shard together, newest first; only those of
    `conversation`, dead-lettered at or after `since_ms`, when given."""
    found: list[DeadLetter] = []
    # before 1970 (a hostile --since) is no stream id: everything is after it
    low = "-" if since_ms is None or since_ms <= 0 else str(since_ms)
    size = PAGE if conversation else limit  # a filter reads page after page
    for shard in shards:  # each shard's newest `limit` that match, at most
        key = ShardKeys.of(shard).dead_letters
        kept = 0
        high = "+"
        while kept < limit:
            page = await _page(redis, key, high, low, size)
            for entry_id, fields in page:
                letter = DeadLetter(shard, entry_id, fields)
                if conversation is None or _conversation_of(letter) == conversation:
                    found.append(letter)
                    kept += 1
            if len(page) < size:
                break
            high = "(" + page[-1][0]
    found.sort(key=lambda d: (*entry_order(d.entry_id), d.shard), reverse=True)
    return Listing(await count(redis, shards), found[:limit])


async def count(redis: Client, shards: Sequence[int]) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for shard in shards:
            pipe.xlen(ShardKeys.of(shard).dead_letters)
        return sum(int(n) for n in await pipe.execute())


def _conversation_of(letter: DeadLetter) -> str | None:
    n = letter.notification
    return n.conversation_id if n is not None else letter.fields.get("c")


@dataclass(slots=True)
class Found:
    letters: list[DeadLetter] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # the ids the operator named, not found


async def find(redis: Client, shards: Sequence[int], ids: Ids) -> Found:
    """The dead letters `ids` name, in the order named (an event id's all together)."""
    out = Found()
    live = set(shards)
    named = [(s, e) for s, e in ids.entries if s in live]
    out.unknown += [f"{s}-{e}" for s, e in ids.entries if s not in live]
    if named:
        async with redis.pipeline(transaction=False) as pipe:
            for shard, entry_id in named:
                pipe.xrange(ShardKeys.of(shard).dead_letters, entry_id, entry_id)
            replies = await pipe.execute()
        for (shard, entry_id), reply in zip(named, replies, strict=True):
            if reply:
                out.letters.append(DeadLetter(shard, entry_id, reply[0][1]))
            else:
                out.unknown.append(f"{shard}-{entry_id}")
    if ids.events:
        seen: set[str] = set()
        async for letter in scan(redis, shards):
            n = letter.notification
            if n is not None and n.event_id in ids.events:
                out.letters.append(letter)
                seen.add(n.event_id)
        out.unknown += sorted(ids.events - seen)
    return out


async def scan(redis: Client, shards: Sequence[int]) -> AsyncIterator[DeadLetter]:
    """Every dead letter of `shards`, oldest first within each shard."""
    for shard in shards:
        key = ShardKeys.of(shard).dead_letters
        low = "-"
        while True:
            page = cast(Entries, await redis.xrange(key, low, "+", count=PAGE))
            for entry_id, fields in page:
                yield DeadLetter(shard, entry_id, fields)
            if len(page) < PAGE:
                break
            low = "(" + page[-1][0]


@dataclass(slots=True)
class Replayed:
    replayed: list[str] = field(default_factory=list)  # dead-letter ids now back on a stream
    refused: dict[str, str] = field(default_factory=dict)  # id -> why
    gone: list[str] = field(default_factory=list)  # purged or replayed by someone meanwhile


async def replay(redis: Client, shard: int, entry_ids: Sequence[str]) -> Replayed:
    """Put these dead letters of one shard back on its stream, each as the sweep wrote it;
    an entry that could not be parsed is refused (purge it instead)."""
    k = ShardKeys.of(shard)
    out = Replayed()
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in entry_ids:
            pipe.xrange(k.dead_letters, entry_id, entry_id)
        replies = await pipe.execute()
    letters: list[tuple[str, str]] = []
    for entry_id, reply in zip(entry_ids, replies, strict=True):
        letter_id = f"{shard}-{entry_id}"
        if not reply:
            out.gone.append(letter_id)
            continue
        n = DeadLetter(shard, entry_id, reply[0][1]).notification
        if n is None:
            out.refused[letter_id] = "malformed: the entry could not be parsed; purge it"
            continue
        letters.append((entry_id, n.entry_fields()[PACKED]))
    if letters:
        results = await run(redis, replay_call(shard, letters))
        for (entry_id, _), result in zip(letters, results, strict=True):
            (out.replayed if result else out.gone).append(f"{shard}-{entry_id}")
    return out


async def replay_letters(
    redis: Client,
    letters: Sequence[DeadLetter],
    progress: Progress | None = None,
) -> Replayed:
    """Replay dead letters found by `find`, a page per script call."""
    by_shard: dict[int, list[str]] = defaultdict(list)
    for letter in letters:
        by_shard[letter.shard].append(letter.entry_id)
    pages = [
        (s, ids[i : i + PAGE]) for s, ids in by_shard.items() for i in range(0, len(ids), PAGE)
    ]
    return await _replay_pages(redis, pages, len(letters), progress)


async def replay_all(
    redis: Client, shards: Sequence[int], progress: Progress | None = None
) -> Replayed:
    """Replay every dead letter of `shards`."""
    total = await count(redis, shards)
    out = Replayed()
    for shard in shards:
        low = "-"
        while True:
            page = cast(
                Entries, await redis.xrange(ShardKeys.of(shard).dead_letters, low, "+", count=PAGE)
            )
            if not page:
                break
            ids = [entry_id for entry_id, _ in page]
            _merge(out, await replay(redis, shard, ids))
            if progress is not None:
                progress(len(out.replayed) + len(out.refused) + len(out.gone), total)
            low = "(" + ids[-1]  # refused entries stay: read past them
    return out


async def _replay_pages(
    redis: Client,
    pages: Sequence[tuple[int, list[str]]],
    total: int,
    progress: Progress | None,
) -> Replayed:
    out = Replayed()
    for shard, ids in pages:
        _merge(out, await replay(redis, shard, ids))
        if progress is not None:
            progress(len(out.replayed) + len(out.refused) + len(out.gone), total)
    return out


def _merge(into: Replayed, part: Replayed) -> None:
    into.replayed += part.replayed
    into.refused.update(part.refused)
    into.gone += part.gone


async def purge_letters(redis: Client, letters: Sequence[DeadLetter]) -> int:
    """Delete these dead letters; the number deleted (one purged meanwhile is not counted)."""
    by_shard: dict[int, list[str]] = defaultdict(list)
    for letter in letters:
        by_shard[letter.shard].append(letter.entry_id)
    purged = 0
    for shard, ids in by_shard.items():
        purged += int(await redis.xdel(ShardKeys.of(shard).dead_letters, *ids))
    return purged


async def purge_all(redis: Client, shards: Sequence[int]) -> int:
    purged = 0
    for shard in shards:
        key = ShardKeys.of(shard).dead_letters
        async with redis.pipeline(transaction=True) as tx:
            tx.xlen(key)
            tx.delete(key)
            n, _ = await tx.execute()
        purged += int(n)
    return purged
