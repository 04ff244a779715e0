"""Waiting for a condition, never for a fixed time: each helper raises when the condition
does not come true in time, saying what it waited for."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable

import aiohttp

Predicate = Callable[[], object] | Callable[[], Awaitable[object]]


async def wait_until(
    predicate: Predicate,
    timeout: float,
    interval: float = 0.1,
    what: str | Callable[[], object] = "",
) -> None:
    """Poll `predicate` (a plain or an async function) until it returns something true.
    Still false after `timeout` seconds: raises TimeoutError with `what` (a text, or a
    function called then, to show the state at the time) or else the predicate's source."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() >= deadline:
            said = what() if callable(what) else what
            raise TimeoutError(f"not true after {timeout}s: {said or _describe(predicate)}")
        await asyncio.sleep(interval)


async def wait_http(url: str, timeout: float = 20.0, status: int = 200) -> None:
    """Until GET `url` answers `status`."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as resp:
                    if resp.status == status:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {status} within {timeout}s")


def _describe(predicate: Predicate) -> str:
    """The predicate's name, or a lambda's source line."""
    name = getattr(predicate, "__qualname__", repr(predicate))
    if "<lambda>" in name:
        with contextlib.suppress(OSError, TypeError):
            return inspect.getsource(predicate).strip()
    return name
