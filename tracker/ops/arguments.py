"""Command-line argument types of the operator commands: a bad value is a usage error
(one line, exit 2) before anything touches Redis."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tracker.model import ID_PATTERN, valid_id
from tracker.redis.connection import Client, redis_time_ms
from tracker.timefmt import parse_rfc3339_ms

MAX_LIMIT = 100_000
_SPAN = re.compile(r"(\d{1,9})(s|m|h|d)")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def count(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low}..{high}, got {value}")
        return value

    return parse


def seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {raw!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected 0.1..3600 seconds, got {raw}")
    return value


def conversation_id(raw: str) -> str:
    if not valid_id(raw):
        raise argparse.ArgumentTypeError(f"conversation id must match {ID_PATTERN}")
    return raw


@dataclass(frozen=True, slots=True)
class Since:
    """`--since`: an instant (unix ms), or a span back from Redis's clock."""

    at_ms: int | None = None
    ago_ms: int | None = None

    async def resolve(self, redis: Client) -> int:
        if self.at_ms is not None:
            return self.at_ms
        return await redis_time_ms(redis) - (self.ago_ms or 0)


def since(raw: str) -> Since:
    span = _SPAN.fullmatch(raw)
    if span is not None:
        return Since(ago_ms=int(span[1]) * _UNIT_MS[span[2]])
    try:
        return Since(at_ms=parse_rfc3339_ms(raw))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an RFC 3339 time or a span such as 30s, 15m, 2h, 7d; got {raw!r}"
        ) from None


def redact(url: str) -> str:
    """A Redis URL fit for an error message: the password replaced by ***."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    netloc = f"{user}{':***' if colon else ''}{at}{hosts}"
    return urlunsplit(parts._replace(netloc=netloc))
