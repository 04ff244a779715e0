"""The web console in a real browser (headless Chromium over the DevTools protocol) against
a live pod: conversations waiting, a notification stuck pending, dead letters. What the page
shows is checked against the pod's Redis; values with markup in them (a receiver's redirect
target, an entry some other client wrote) show as text; a replay clicked on the page
reaches the webhook receiver. The screenshot is written to var/console.png (the README's
docs/console.png is a copy)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis as sync_redis
from aiohttp import web

from tests.support.browser import Page, chromium
from tests.support.processes import Pod
from tests.support.receiver import Receiver
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_http, wait_until
from tracker.delivery.notification import Notification
from tracker.redis.keys import CONSUMER_GROUP, ShardKeys, shard_of

pytestmark = pytest.mark.slow

SHARDS = 4
FULL, READ_ONLY = "full-token", "console-token"
MARKUP = "<img src=x onerror=window.__xss=1>"
POD_SETTINGS = {
    "SHARD_COUNT": str(SHARDS),
    "CONSUMER_PROCESSES": "1",
    "NOTIFY_SINK": "webhook",
    "MAX_DELIVERIES": "1000",  # the stuck notification stays pending, retried
    "NOTIFY_WEBHOOK_BREAKER_FAILURES": "100000",  # and does not stop the others
    "API_TOKEN": FULL,
    "CONSOLE_TOKEN": READ_ONLY,
}
WAITING = ["waiting-1", "a.b:c@d-e"]  # the id pattern's punctuation
STUCK = "stuck:1@x.y"
UNDELIVERABLE = "undeliverable-1"
SHOT = Path(__file__).resolve().parent.parent / "var" / "console.png"


@dataclass
class Selective(Receiver):
    """The test receiver, answering some conversations otherwise: a redirect whose target
    holds markup (it ends up in the error text), or 410 Gone (a dead letter at once)."""

    refuse: dict[str, web.Response] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        event = orjson.loads(await request.read())
        answer = self.refuse.get(event["conversation_id"])
        if answer is not None:
            return web.Response(status=answer.status, headers=answer.headers)
        return await super().handle(request)


@pytest.fixture
async def pod(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> AsyncIterator[tuple[Pod, Selective]]:
    receiver = Selective()
    receiver.refuse = {
        STUCK: web.Response(status=307, headers={"Location": MARKUP}),
        UNDELIVERABLE: web.Response(status=410),
    }
    await receiver.start()
    hook = {"NOTIFY_WEBHOOK_URL": receiver.url, "NOTIFY_WEBHOOK_SECRET": receiver.secret}
    pod = Pod("console-pod", redis_server.url, tmp_path, **POD_SETTINGS, **hook)
    try:
        await wait_http(f"{pod.base}/ready", timeout=60)
        yield pod, receiver
    finally:
        pod.stop()
        await receiver.stop()
    assert "Traceback" not in pod.role.output(), pod.role.output()[-3000:]


async def agent_message(pod: Pod, conversation: str, timeout_ms: int) -> None:
    body = {"agent_id": "agent-7", "message_id": f"m-{conversation}", "timeout_ms": timeout_ms}
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {FULL}"}) as session,
        session.post(f"{pod.base}/conversations/{conversation}/agent-message", json=body) as r,
    ):
        assert r.status == 200, await r.text()


# --- the pod's truth, from Redis ---------------------------------------------------------


def truth(client: sync_redis.Redis) -> dict[str, Any]:
    """What the page must show, read from the pod's Redis."""
    shards, pending, dead = [], set(), set()
    for n in range(SHARDS):
        k = ShardKeys.of(n)
        leader = client.get(k.leader)
        try:
            rows: Any = client.xpending_range(k.outbox, CONSUMER_GROUP, "-", "+", 100)
        except sync_redis.ResponseError:  # the consumer has not created the group yet
            rows = []
        shards.append(
            {
                "shard": str(n),
                "leader": str(leader).split("|")[0] if leader else "none",
                "waiting": str(client.zcard(k.waiting)),
                "pending": str(len(rows)),
                "dead_letters": str(client.xlen(k.dead_letters)),
            }
        )
        for row in rows:
            entries: Any = client.xrange(k.outbox, row["message_id"], row["message_id"])
            try:
                p = Notification.from_entry(n, row["message_id"], entries[0][1])
                conversation, level = p.conversation_id, str(p.level)
            except (IndexError, ValueError):  # trimmed, or the foreign entry just read
                conversation, level = "-", "-"
            pending.add((f"{n}-{row['message_id']}", conversation, level, row["consumer"]))
        letters: Any = client.xrange(k.dead_letters)
        for entry_id, fields in letters:
            conversation = fields.get("c") if "c" in fields else "malformed"
            dead.add((f"{n}-{entry_id}", conversation, fields["reason"].split(":")[0]))
    return {"shards": shards, "pending": pending, "dead": dead}


PAGE_DATA = """(() => {
  const cells = (tr) => Object.fromEntries(
    [...tr.querySelectorAll("td[data-field]")].map((td) => [td.dataset.field, td.textContent]));
  return {
    shards: [...document.querySelectorAll("#shards tbody tr")].map(cells),
    pending: [...document.querySelectorAll("#pending tbody tr[data-id]")]
      .map((tr) => ({ id: tr.dataset.id, ...cells(tr) })),
    dead: [...document.querySelectorAll("#dead-letters tbody tr[data-id]")]
      .map((tr) => ({ id: tr.dataset.id, ...cells(tr) })),
  };
})()"""


def shown(page_data: dict[str, Any]) -> dict[str, Any]:
    """The page's tables, cut to what `truth` reads."""
    fields = ("shard", "leader", "waiting", "pending", "dead_letters")
    return {
        "shards": [{f: row[f] for f in fields} for row in page_data["shards"]],
        "pending": {
            (p["id"], p["conversation_id"], p["level"], p["consumer"]) for p in page_data["pending"]
        },
        "dead": {(d["id"], d["conversation_id"], d["reason"]) for d in page_data["dead"]},
    }


async def matches_the_pod(page: Page, client: sync_redis.Redis, timeout: float = 30.0) -> None:
    """The page (refreshing every few seconds) shows what Redis holds; fails with both."""
    deadline = time.monotonic() + timeout
    while True:
        on_page = shown(await page.evaluate(PAGE_DATA))
        expected = truth(client)
        if on_page == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the page shows {on_page}\nthe pod holds {expected}")
        await asyncio.sleep(0.5)


async def sign_in(page: Page, token: str) -> None:
    await page.wait_for("!document.getElementById('sign-in').hidden")
    await page.evaluate("document.getElementById('token').focus()")
    await page.send("Input.insertText", text=token)
    await page.evaluate("document.querySelector('#sign-in button').click()")
    await page.wait_for("!document.getElementById('console').hidden")


async def click(page: Page, selector: str) -> None:
    found = await page.evaluate(
        f"(() => {{ const b = document.querySelector({orjson.dumps(selector).decode()});"
        " if (!b) return false; b.click(); return true; })()"
    )
    assert found, selector


# --- the test ----------------------------------------------------------------------------


async def test_the_console_shows_the_pod_and_replays_from_the_page(
    pod: tuple[Pod, Selective], redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    live, receiver = pod
    for conversation in WAITING:
        await agent_message(live, conversation, 3_600_000)
    await agent_message(live, STUCK, 100)
    await agent_message(live, UNDELIVERABLE, 100)
    malformed_shard = 2  # an entry some other client wrote into a shard stream
    redis_sync.xadd(ShardKeys.of(malformed_shard).outbox, {"e": "<script>window.__xss=2</script>"})

    def settled() -> bool:
        t = truth(redis_sync)
        conversations = {d[1] for d in t["dead"]}
        stuck = [p for p in t["pending"] if p[1] == STUCK and p[2] == "3"]
        return {UNDELIVERABLE, "malformed"} <= conversations and bool(stuck)

    await wait_until(settled, timeout=60, what=lambda: truth(redis_sync))

    async with chromium(tmp_path / "browser") as page:
        await page.navigate(f"{live.base}/console")
        # The read-only token sees everything and can change nothing.
        await sign_in(page, READ_ONLY)
        await matches_the_pod(page, redis_sync)
        undeliverable, wanted = dead_letter_of(redis_sync, UNDELIVERABLE)
        letters = ShardKeys.of(shard_of(UNDELIVERABLE, SHARDS)).dead_letters
        before = redis_sync.xlen(letters)
        await click(page, f'tr[data-id="{undeliverable}"] button[data-action="replay"]')
        await page.wait_for("document.getElementById('notice').textContent.includes('only reads')")
        assert redis_sync.xlen(letters) == before

        # Values with markup are shown as text, never run.
        pending_error = await page.wait_for(
            "[...document.querySelectorAll('#pending td[data-field=last_error]')]"
            ".map((td) => td.textContent).find((t) => t.includes('redirect to'))"
        )
        # curl names the redirect's target as an absolute URL, spaces escaped: markup stays
        assert pending_error.startswith("webhook: HTTP 307 redirect to http://127.0.0.1:")
        assert pending_error.endswith("/" + MARKUP.replace(" ", "%20")), pending_error
        malformed = await page.evaluate(
            "document.querySelector('#dead-letters tr[data-malformed=yes] "
            "td[data-field=last_error]').textContent"
        )
        assert "<script>window.__xss=2</script>" in malformed
        assert await page.evaluate("document.querySelectorAll('main img, main script').length") == 0
        assert await page.evaluate("typeof window.__xss") == "undefined"

        # A conversation looked up: its state, and its stuck entry.
        await page.evaluate("document.getElementById('conversation-id').focus()")
        await page.send("Input.insertText", text=STUCK)
        await click(page, "#lookup button")
        await page.wait_for("!!document.querySelector('#conversation [data-table=history]')")
        await same(
            page,
            CONVERSATION_ON_PAGE,
            lambda: conversation_truth(live, redis_sync, STUCK),
        )

        # The full token, asked for once: a reload keeps it (sessionStorage).
        await click(page, "#sign-out")
        await sign_in(page, FULL)
        await page.reload()
        await page.wait_for("Number(document.body.dataset.refreshed || 0) >= 1")
        assert await page.evaluate("document.getElementById('sign-in').hidden")
        await matches_the_pod(page, redis_sync)
        await page.evaluate("document.getElementById('conversation-id').focus()")
        await page.send("Input.insertText", text=STUCK)
        await click(page, "#lookup button")
        await page.wait_for("!!document.querySelector('#conversation [data-table=in-streams]')")
        await page.screenshot(SHOT)

        # Replay from the page: the receiver now accepts it, and gets it.
        receiver.refuse.pop(UNDELIVERABLE)
        await click(page, f'tr[data-id="{undeliverable}"] button[data-action="replay"]')
        await wait_until(
            lambda: any(r.event["event_id"] == wanted for r in receiver.events),
            timeout=30,
            what=lambda: [r.event for r in receiver.events],
        )
        await page.wait_for(f"!document.querySelector('tr[data-id=\"{undeliverable}\"]')")
        await matches_the_pod(page, redis_sync)


CONVERSATION_ON_PAGE = """(() => {
  const rows = (name) => [...document.querySelectorAll(`#conversation [data-table=${name}] tr`)]
    .slice(1).map((tr) => [...tr.cells].map((td) => td.textContent));
  return {
    state: document.querySelector("#conversation dd[data-field=state]").textContent,
    levels: rows("levels").map((r) => [r[0], r[1]]),
    history: rows("history").map((r) => [r[1], r[3]]),
    in_streams: rows("in-streams").map((r) => [r[0], r[1]]),
  };
})()"""


async def conversation_truth(pod: Pod, client: sync_redis.Redis, conversation: str) -> Any:
    """What the lookup must show: the API's view and history, the entries in Redis."""
    view = await api_get(pod, f"/conversations/{conversation}")
    history = (await api_get(pod, f"/conversations/{conversation}/history"))["history"]
    pending = sorted(p[0] for p in truth(client)["pending"] if p[1] == conversation)
    return {
        "state": view["state"],
        "levels": [[str(v["level"]), v["status"]] for v in view["levels"]],
        "history": [[h["kind"], str(h.get("level", "-"))] for h in history],
        "in_streams": [["pending", entry] for entry in pending],
    }


async def same(page: Page, expression: str, expected: Any, timeout: float = 30.0) -> None:
    """The page (refreshing every few seconds) comes to show what `expected()` returns."""
    deadline = time.monotonic() + timeout
    while True:
        on_page, wanted = await page.evaluate(expression), await expected()
        if on_page == wanted:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the page shows {on_page}\nthe pod holds {wanted}")
        await asyncio.sleep(0.5)


async def api_get(pod: Pod, path: str) -> Any:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {FULL}"}) as session,
        session.get(f"{pod.base}{path}") as r,
    ):
        return await r.json()


def dead_letter_of(client: sync_redis.Redis, conversation: str) -> tuple[str, str]:
    """The id of the conversation's dead letter of the highest level (a lower one is
    superseded when replayed: never sent after a higher one), and its event id."""
    shard = shard_of(conversation, SHARDS)
    letters: Any = client.xrange(ShardKeys.of(shard).dead_letters)
    mine = [Notification.from_entry(shard, i, f) for i, f in letters if f.get("c") == conversation]
    top = max(mine, key=lambda n: n.level)
    return f"{shard}-{top.entry_id}", top.event_id
