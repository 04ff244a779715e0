"""Dead letters (tracker.ops.dead_letters) against a real Redis: ids that name their shard,
a global limit, filters, replay through its script, purge, malformed entries."""

from __future__ import annotations

from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from tracker.delivery.notification import Notification, event_id
from tracker.ops import dead_letters as dl
from tracker.redis.keys import ShardKeys
from tracker.redis.scripts import run

SHARDS = [0, 1, 2, 3]
SINCE_MS = 1_764_000_000_000


def letter_fields(
    conversation: str, level: int = 1, reason: str = "max_deliveries: HTTP 500"
) -> dict[str, str]:
    """A dead letter as tracker/lua/dead_letter.lua writes it."""
    return {
        "reason": reason,
        "attempts": "5",
        "source_id": "1-0",
        "c": conversation,
        "l": str(level),
        "g": "1",
        "s": str(SINCE_MS),
        "d": str(SINCE_MS + 1000 * level),
        "a": "agent-1",
        "m": "m-1",
    }


def add(client: sync_redis.Redis, shard: int, fields: dict[str, str], entry_id: str = "*") -> str:
    fields_any: Any = fields
    return str(client.xadd(ShardKeys.of(shard).dead_letters, fields_any, id=entry_id))


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("7-1795975119440-0", dl.Ids(entries=((7, "1795975119440-0"),))),
        (" 0-1-2 ", dl.Ids(entries=((0, "1-2"),))),
        ("evt_" + "a" * 32, dl.Ids(events=frozenset({"evt_" + "a" * 32}))),
    ],
)
def test_ids_name_their_shard_or_the_event(token: str, expected: dl.Ids) -> None:
    assert dl.parse_ids([token]) == expected


@pytest.mark.parametrize(
    "token",
    [
        "1795975119440-0",  # a bare stream id: which shard?
        "7-1795975119440",
        "x-1-0",
        "7-1-0-1",
        "",
        "evt_XYZ",
        "evt_" + "a" * 31,
        "7-99999999999999999999-0",  # beyond a stream id's 64 bits
        "<script>",
    ],
)
def test_a_token_that_is_no_dead_letter_id_is_refused(token: str) -> None:
    with pytest.raises(dl.BadId, match="not a dead-letter id"):
        dl.parse_ids([token])


async def test_the_same_stream_id_in_two_shards_is_two_dead_letters(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    """Stream ids repeat across shards: an id names one shard's entry, and purging it leaves
    the other shard's alone (it once printed "purged 2")."""
    add(redis_sync, 1, letter_fields("conv-a"), "1700000000000-0")
    add(redis_sync, 2, letter_fields("conv-b"), "1700000000000-0")
    found = await dl.find(redis, SHARDS, dl.parse_ids(["1-1700000000000-0"]))
    assert [
        (d.shard, d.notification and d.notification.conversation_id) for d in found.letters
    ] == [(1, "conv-a")]
    assert await dl.purge_letters(redis, found.letters) == 1
    assert redis_sync.xlen(ShardKeys.of(1).dead_letters) == 0
    assert redis_sync.xlen(ShardKeys.of(2).dead_letters) == 1


async def test_find_reports_ids_that_name_nothing(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    add(redis_sync, 1, letter_fields("conv-a"), "1700000000000-0")
    ids = dl.parse_ids(["1-1700000000000-1", "9-1700000000000-0", "evt_" + "0" * 32])
    found = await dl.find(redis, SHARDS, ids)
    assert found.letters == []
    assert found.unknown == ["9-1700000000000-0", "1-1700000000000-1", "evt_" + "0" * 32]


async def test_an_event_id_finds_its_dead_letters_in_any_shard(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    add(redis_sync, 3, letter_fields("conv-a", level=2))
    add(redis_sync, 3, letter_fields("conv-a", level=1))
    wanted = event_id("conv-a", SINCE_MS, 2)
    found = await dl.find(redis, SHARDS, dl.parse_ids([wanted]))
    assert [d.notification.level for d in found.letters if d.notification] == [2]
    assert found.unknown == []


async def test_list_is_the_newest_overall_with_one_global_limit(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    for i in range(5):
        for shard in (0, 1, 2):
            add(
                redis_sync,
                shard,
                letter_fields(f"conv-{shard}-{i}"),
                f"{1700000000000 + i}-{shard}",
            )
    listing = await dl.list_dead_letters(redis, SHARDS, 2)
    assert listing.total == 15
    assert [d.id for d in listing.items] == ["2-1700000000004-2", "1-1700000000004-1"]


async def test_list_filters_by_conversation_and_time(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    for i in range(1200):  # more than a page, so the filter reads several
        add(redis_sync, 0, letter_fields(f"other-{i}"), f"{1700000000000 + i}-0")
        if i == 1:
            add(redis_sync, 0, letter_fields("wanted"), "1700000000001-1")
    add(redis_sync, 2, letter_fields("wanted", level=2), "1700000005000-0")
    by_conversation = await dl.list_dead_letters(redis, SHARDS, 10, conversation="wanted")
    assert [d.id for d in by_conversation.items] == ["2-1700000005000-0", "0-1700000000001-1"]
    since = await dl.list_dead_letters(redis, SHARDS, 10_000, since_ms=1700000001100)
    assert len(since.items) == 1200 - 1100 + 1
    assert min(d.dead_lettered_ms for d in since.items) == 1700000001100


async def test_the_json_shows_the_notification_and_why(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    entry = add(redis_sync, 2, letter_fields("conv-a", reason="permanent: webhook: HTTP 410"))
    (letter,) = (await dl.list_dead_letters(redis, SHARDS, 10)).items
    data = letter.to_json()
    assert data["id"] == f"2-{entry}"
    assert data["reason"] == "permanent"
    assert data["last_error"] == "webhook: HTTP 410"
    assert data["attempts"] == 5
    assert data["malformed"] is False
    assert data["notification"] == {
        "event_id": event_id("conv-a", SINCE_MS, 1),
        "conversation_id": "conv-a",
        "level": 1,
        "agent_id": "agent-1",
        "message_id": "m-1",
        "waiting_since": "2025-11-24T16:00:00.000Z",
        "due_at": "2025-11-24T16:00:01.000Z",
    }
    assert data["dead_lettered_at"].endswith("Z")


async def test_a_malformed_dead_letter_is_listed_raw_and_never_replayed(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    raw = {"reason": "malformed: not enough fields", "attempts": "1", "e": "a|b"}
    entry = add(redis_sync, 1, raw)
    unparsable = add(redis_sync, 1, {"reason": "unexpected: boom", "x": "<img src=x>"})
    listing = await dl.list_dead_letters(redis, SHARDS, 10)
    shown = {d.id: d.to_json() for d in listing.items}
    assert shown[f"1-{entry}"]["malformed"] is True
    assert shown[f"1-{entry}"]["fields"] == raw
    assert shown[f"1-{unparsable}"]["fields"]["x"] == "<img src=x>"
    done = await dl.replay(redis, 1, [entry, unparsable])
    assert done.replayed == []
    assert set(done.refused) == {f"1-{entry}", f"1-{unparsable}"}
    assert redis_sync.xlen(ShardKeys.of(1).dead_letters) == 2
    assert redis_sync.xlen(ShardKeys.of(1).outbox) == 0


async def test_replay_puts_the_notification_back_as_the_sweep_wrote_it(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    entry = add(redis_sync, 3, letter_fields("conv-a", level=2))
    record = f"W|1|{SINCE_MS}|1000|agent|m1|{SINCE_MS}|||"
    redis_sync.hset(ShardKeys.of(3).records, "conv-a", record)  # the conversation is here
    done = await dl.replay(redis, 3, [entry, "1-0"])
    assert done.replayed == [f"3-{entry}"]
    assert done.gone == ["3-1-0"]
    assert redis_sync.xlen(ShardKeys.of(3).dead_letters) == 0
    entries: Any = redis_sync.xrange(ShardKeys.of(3).outbox)
    ((new_id, fields),) = entries
    n = Notification.from_entry(3, new_id, fields)
    assert (n.conversation_id, n.level, n.generation, n.waiting_since_ms) == (
        "conv-a",
        2,
        1,
        SINCE_MS,
    )
    assert fields == n.entry_fields()  # one packed field, as the sweep script writes
    kind, _, gen, level = str(redis_sync.hget(ShardKeys.of(3).history, "conv-a")).split("|")
    assert (kind, gen, level) == ("R", "1", "2")  # the replay is in its history


async def test_the_replay_script_puts_an_entry_back_once(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    """Two operators replaying the same dead letter at once: the script checks that it is
    still there, in the same step as it moves it."""
    entry = add(redis_sync, 0, letter_fields("conv-a"))
    k = ShardKeys.of(0)
    first = await run(redis, dl.replay_call(0, [(entry, "x|1")]))
    second = await run(redis, dl.replay_call(0, [(entry, "x|1")]))
    assert first[0] is not None
    assert second == [None]
    assert redis_sync.xlen(k.outbox) == 1


async def test_replay_all_reads_past_refused_entries_and_reports_progress(
    redis: Redis, redis_sync: sync_redis.Redis
) -> None:
    add(redis_sync, 0, {"reason": "malformed: x", "e": "bad"})
    for i in range(dl.PAGE + 10):
        add(redis_sync, i % 2, letter_fields(f"conv-{i}"))
    seen: list[tuple[int, int]] = []
    done = await dl.replay_all(redis, SHARDS, lambda d, t: seen.append((d, t)))
    assert len(done.replayed) == dl.PAGE + 10
    assert len(done.refused) == 1
    assert seen[-1] == (dl.PAGE + 11, dl.PAGE + 11)
    assert len(seen) >= 2
    assert redis_sync.xlen(ShardKeys.of(0).dead_letters) == 1


async def test_purge_all_empties_every_shard(redis: Redis, redis_sync: sync_redis.Redis) -> None:
    for shard in SHARDS:
        add(redis_sync, shard, letter_fields(f"conv-{shard}"))
    assert await dl.purge_all(redis, SHARDS) == 4
    assert await dl.count(redis, SHARDS) == 0
