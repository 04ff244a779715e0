"""RFC 3339 parsing and formatting, in integer milliseconds since the epoch (UTC)."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: RFC 3339 section 5.6 date-time: a zone is required, as Z or +hh:mm / -hh:mm.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def parse_rfc3339_ms(text: str) -> int:
    """Milliseconds since the epoch; ValueError for a malformed or zone-less timestamp."""
    if not isinstance(text, str) or len(text) > 40 or not _RFC3339.fullmatch(text):
        raise ValueError("not an RFC 3339 date-time")
    moment = datetime.fromisoformat(text.replace("z", "Z"))
    if moment.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return (moment - EPOCH) // timedelta(milliseconds=1)  # exact: no float rounding


@functools.lru_cache(maxsize=4096)
def _second_prefix(seconds: int) -> str:
    days, rem = divmod(seconds, 86_400)
    hours, rem = divmod(rem, 3600)
    minutes, rem = divmod(rem, 60)
    date = datetime.fromtimestamp(days * 86400, tz=UTC).strftime("%Y-%m-%dT")
    return f"{date}{hours:02d}:{minutes:02d}:{rem:02d}."


@functools.lru_cache(maxsize=4096)
def format_ms(ms: int) -> str:
    """RFC 3339 in UTC with millisecond precision, e.g. 2026-11-25T12:00:00.000Z.

    Hot (every notification and API answer): cached, as the events of a batch mostly share
    their times, and all but the milliseconds is cached per second.
    """
    seconds, milli = divmod(ms, 1000)
    return f"{_second_prefix(seconds)}{milli:03d}Z"
