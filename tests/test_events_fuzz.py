"""Fuzz POST /events on the live API with batches that mix good items and malformed ones:
each item gets its own result, in order; a malformed item is rejected alone with a 4xx
code, and nothing of it reaches Redis."""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis as sync_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.processes import running_api
from tests.support.redis_server import RedisServer
from tracker.redis.keys import ShardKeys, shard_of
from tracker.timefmt import format_ms

pytestmark = pytest.mark.slow

SHARDS = 4
serial = itertools.count()


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    redis_server.client().flushall()
    workdir = tmp_path_factory.mktemp("fuzz")
    with running_api(redis_server.url, workdir, POD_ID="fuzz", SHARD_COUNT=str(SHARDS)) as base:
        yield base


def post(base: str, body: bytes, content_type: str = "application/json") -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{base}/events", data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def good_item(draw: st.DrawFn) -> dict[str, Any]:
    c = f"ok-{next(serial)}"
    if draw(st.booleans()):
        item: dict[str, Any] = {
            "type": "agent_message",
            "conversation_id": c,
            "agent_id": "agent-1",
            "message_id": f"m-{c}",
        }
        if draw(st.booleans()):
            item["timeout_ms"] = draw(st.integers(100, 86_400_000))
    else:
        item = {
            "type": "customer_response",
            "conversation_id": c,
            "customer_id": "customer-1",
            "message_id": f"r-{c}",
        }
    if draw(st.booleans()):
        item["timestamp"] = format_ms(int(time.time() * 1000) - draw(st.integers(0, 10**9)))
    return item


BAD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),  # what a JSON parser keeps as a number (orjson)
    st.floats(allow_nan=False, allow_infinity=False),  # NaN and Infinity are not JSON
    st.lists(st.integers(-5, 5), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["", " ", "a b", "x" * 129, "ünï", "a\n", "{0}", "a|b", "\x00"]),
)
PRESENT = BAD_VALUES.filter(lambda v: v is not None)  # for optional fields: null means absent
BAD_TIMESTAMPS = st.one_of(
    PRESENT,
    st.sampled_from(
        [
            "yesterday",
            "2026-01-01",
            "2026-01-01T00:00:00",  # no zone
            "2026-13-01T00:00:00Z",
            "2026-01-01T25:00:00Z",
            "2999-01-01T00:00:00Z",  # too far in the future
            "1999-01-01T00:00:00Z",  # too far in the past
            "2026-01-01 00:00:00Z",
            "+002026-01-01T00:00:00Z",
        ]
    ),
)


@st.composite
def bad_item(draw: st.DrawFn) -> tuple[Any, str | None]:
    """A malformed item, and the conversation id it names (None when it names none)."""
    base = good_item(draw)
    c = f"bad-{next(serial)}"
    base["conversation_id"] = c
    how = draw(
        st.sampled_from(
            ["not_object", "no_type", "type", "drop", "field", "timestamp", "timeout", "id"]
        )
    )
    if how == "not_object":
        return draw(st.one_of(BAD_VALUES, st.just([base]))), None
    if how == "no_type":
        del base["type"]
    elif how == "type":
        base["type"] = draw(BAD_VALUES | st.sampled_from(["agent", "AGENT_MESSAGE", "reply"]))
    elif how == "drop":
        required = ["message_id", "agent_id" if base["type"] == "agent_message" else "customer_id"]
        del base[draw(st.sampled_from(required))]
    elif how == "field":
        field = "agent_id" if base["type"] == "agent_message" else "customer_id"
        base[draw(st.sampled_from([field, "message_id"]))] = draw(BAD_VALUES)
    elif how == "timestamp":
        base["timestamp"] = draw(BAD_TIMESTAMPS)
    elif how == "timeout":
        base["type"] = "agent_message"
        base.pop("customer_id", None)
        base["agent_id"] = "agent-1"
        base["timeout_ms"] = draw(
            PRESENT.filter(lambda v: not (type(v) is int and 100 <= v <= 7 * 86_400_000))
        )
    else:
        bad = draw(BAD_VALUES)
        base["conversation_id"] = bad
        return base, None
    return base, c


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[Any, str | None, bool]]:
    """(item, conversation id it names, whether it is good), shuffled."""
    items: list[tuple[Any, str | None, bool]] = []
    for _ in range(draw(st.integers(0, 6))):
        item = good_item(draw)
        items.append((item, item["conversation_id"], True))
    for _ in range(draw(st.integers(1, 6))):
        item, c = draw(bad_item())
        items.append((item, c, False))
    return list(draw(st.permutations(items)))


def stored_ids(client: sync_redis.Redis) -> set[str]:
    ids: set[str] = set()
    for shard in range(SHARDS):
        k = ShardKeys.of(shard)
        for found in (client.hkeys(k.records), client.zrange(k.waiting, 0, -1)):
            ids |= {str(i) for i in found}
        ids |= {str(i) for i in client.hkeys(k.fired)}
    return ids


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=batches())
def test_malformed_items_are_rejected_alone_and_leave_no_trace(
    api: str, redis_server: RedisServer, batch: list[tuple[Any, str | None, bool]]
) -> None:
    status, body = post(api, json.dumps([item for item, _, _ in batch]).encode())
    assert status == 200, body
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(batch)))
    client = redis_server.client()
    try:
        for (item, c, good), result in zip(batch, results, strict=True):
            if good:
                assert result["status"] == "ok", (item, result)
            else:
                assert result["status"] == "error", (item, result)
                assert result["error"]["code"] in ("invalid_field", "invalid_body"), result
                assert result["error"]["message"]
                if c is not None:
                    assert client.hget(ShardKeys.of(shard_of(c, SHARDS)).records, c) is None
        leaked = {i for i in stored_ids(client) if not i.startswith("ok-")}
        assert not leaked, leaked
    finally:
        client.close()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"[", "application/json", 400, "invalid_json"),
        (b'{"type": "agent_message"}', "application/json", 400, "invalid_body"),
        (b"null", "application/json", 400, "invalid_body"),
        (b"[]", "text/plain", 415, "unsupported_media_type"),
        (json.dumps([{}] * 1001).encode(), "application/json", 413, "batch_too_large"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
    ],
)
def test_a_malformed_request_is_rejected_whole(
    api: str, redis_server: RedisServer, body: bytes, content_type: str, status: int, code: str
) -> None:
    before = stored_ids(redis_server.client())
    got, answer = post(api, body, content_type)
    assert (got, answer["error"]["code"]) == (status, code)
    assert stored_ids(redis_server.client()) == before
