"""The Lua scripts: loaded from tracker/lua, run by SHA; after a SCRIPT FLUSH (NOSCRIPT)
the call is rerun with EVAL, which sends the source and caches it again in one step
(a SCRIPT LOAD followed by EVALSHA could meet a second flush in between)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from tracker.redis.lane import AnyLane

Arg = str | int | float | bytes


def _source(name: str) -> str:
    return (resources.files("tracker") / "lua" / f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua file, with the shared prelude prepended."""

    name: str
    source: str
    sha: str

    @classmethod
    def load(cls, name: str) -> Script:
        source = _source("prelude") + "\n" + _source(name)
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())

    async def run(self, client: Redis, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)

    def command(
        self, keys: Sequence[str], args: Sequence[Arg], *, source: bool = False
    ) -> list[Arg]:
        """EVALSHA (or, with `source`, EVAL) of this script, as one command's arguments."""
        if source:
            return ["EVAL", self.source, len(keys), *keys, *args]
        return ["EVALSHA", self.sha, len(keys), *keys, *args]


class Scripts:
    """Every script of the tracker, by name."""

    def __init__(self) -> None:
        self.apply = Script.load("apply")
        self.sweep = Script.load("sweep")
        self.recheck = Script.load("recheck")
        self.deliver_stream = Script.load("deliver_stream")
        self.ack = Script.load("ack")
        self.attempt_failed = Script.load("attempt_failed")
        self.dead_letter = Script.load("dead_letter")
        self.dead_letter_replay = Script.load("dead_letter_replay")
        self.lease_acquire = Script.load("lease_acquire")
        self.lease_renew = Script.load("lease_renew")
        self.lease_release = Script.load("lease_release")
        self.trim = Script.load("trim")
        self.migrate_out = Script.load("migrate_out")
        self.migrate_in = Script.load("migrate_in")
        self.layout_set = Script.load("layout_set")

    def all(self) -> list[Script]:
        return [v for v in vars(self).values() if isinstance(v, Script)]


Call = tuple[Script, Sequence[str], Sequence[Arg]]


async def run_batch(
    client: Redis | AnyLane, calls: Sequence[Call], *, raise_on_error: bool = True
) -> list[Any]:
    """Run many script calls in one round trip (a pipeline, or a lane's); calls hit by
    NOSCRIPT are rerun with EVAL. A call's error is raised, or with ``raise_on_error=False``
    returned in its place."""
    results = await _pipeline(client, calls)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        rerun = await _pipeline(client, [calls[i] for i in missing], source=True)
        for i, result in zip(missing, rerun, strict=True):
            results[i] = result
    if raise_on_error:
        for result in results:
            if isinstance(result, Exception):
                raise result
    return results


async def _pipeline(
    client: Redis | AnyLane, calls: Sequence[Call], *, source: bool = False
) -> list[Any]:
    commands = [script.command(keys, args, source=source) for script, keys, args in calls]
    if isinstance(client, AnyLane):
        return await client.execute(commands)
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            # execute_command, not evalsha(): redis-py's cluster pipeline refuses the helper
            # but routes a raw EVALSHA by its keys, and every call here keeps to one slot.
            pipe.execute_command(*command)
        return await pipe.execute(raise_on_error=False)
