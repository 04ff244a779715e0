"""The Lua script runner.

A script is a file in tracker/lua with a KEYS/ARGV header; the shared prelude is prepended.
Each script has one typed function beside the code that uses it, which builds a `Call`:
the script, its KEYS and ARGV, and how to read its reply (for example `store.apply_call`,
`sweeper.sweep_call`). Calls run by SHA; after a SCRIPT FLUSH (NOSCRIPT) a call is rerun
with EVAL, which sends the source and caches it again in one step (a SCRIPT LOAD followed
by EVALSHA could meet a second flush in between). Error replies arrive as exception
classes (tracker/redis/replies.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Generic, Protocol, TypeVar

from redis.exceptions import NoScriptError

from tracker.redis.connection import Client

Arg = str | int | float | bytes
Command = Sequence[Arg]
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

#: Every script loaded so far, by name (the modules that own them load them at import).
LOADED: dict[str, Script] = {}


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
        if name not in LOADED:
            source = _source("prelude") + "\n" + _source(name)
            LOADED[name] = cls(name, source, hashlib.sha1(source.encode()).hexdigest())
        return LOADED[name]

    def command(
        self, keys: Sequence[str], args: Sequence[Arg], *, source: bool = False
    ) -> list[Arg]:
        """EVALSHA (or, with `source`, EVAL) of this script, as one command's arguments."""
        if source:
            return ["EVAL", self.source, len(keys), *keys, *args]
        return ["EVALSHA", self.sha, len(keys), *keys, *args]


def _as_is(reply: Any) -> Any:
    return reply


@dataclass(frozen=True, slots=True)
class Call(Generic[R_co]):
    """One call of a script: its KEYS, its ARGV and what its reply means."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Arg]
    parse: Callable[[Any], R_co] = _as_is

    def command(self, *, source: bool = False) -> list[Arg]:
        """EVALSHA (or, with `source`, EVAL) of this call, as one command's arguments."""
        return self.script.command(self.keys, self.args, source=source)


class Executor(Protocol):
    """Sends commands in one round trip; an error reply comes back in its command's place
    (the API's lane does this; `PipelineExecutor` does it with a client's pipeline)."""

    async def execute(self, commands: Sequence[Command]) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class PipelineExecutor:
    client: Client

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for command in commands:
                # execute_command, not evalsha(): redis-py's cluster pipeline refuses the
                # helper but routes a raw EVALSHA by its keys; every call keeps to one slot.
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies


def executor(target: Client | Executor) -> Executor:
    if isinstance(target, Client):
        return PipelineExecutor(target)
    return target


async def run(target: Client | Executor, call: Call[R]) -> R:
    """Run one call; its error reply is raised."""
    (reply,) = await run_all(target, [call])
    return reply


async def run_all(target: Client | Executor, calls: Sequence[Call[R]]) -> list[R]:
    """Run calls in one round trip; the first error reply among them is raised."""
    replies = await run_each(target, calls)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies  # type: ignore[return-value]  # no exception left among them


async def run_each(target: Client | Executor, calls: Sequence[Call[R]]) -> list[R | Exception]:
    """Run calls in one round trip; each one's parsed reply, or its error, in its place.
    Calls hit by NOSCRIPT are rerun with EVAL."""
    to = executor(target)
    replies = await to.execute([c.command() for c in calls])
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        again = [calls[i].command(source=True) for i in missing]
        for i, reply in zip(missing, await to.execute(again), strict=True):
            replies[i] = reply
    return [
        r if isinstance(r, Exception) else c.parse(r) for c, r in zip(calls, replies, strict=True)
    ]
