"""RFC 3339 parsing and formatting, in integer milliseconds since the epoch (UTC)."""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime

EPOCH_DAY = date(1970, 1, 1).toordinal()

#: RFC 3339 section 5.6 date-time: a zone is required, as Z or +hh:mm / -hh:mm.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_rfc3339_ms(text: str) -> int:
    """Milliseconds since the epoch (fractions of a millisecond dropped); ValueError, with
    a message that says what is wrong, for anything that is not an RFC 3339 date-time.

    A leap second (``23:59:60`` UTC, whatever the offset it is written in) reads as
    ``23:59:59.999``: the tracker keeps time in Unix milliseconds, which have no 60th
    second, and the last millisecond of the day keeps it in order with its neighbours.
    """
    match = _RFC3339.fullmatch(text) if isinstance(text, str) and len(text) <= 40 else None
    if match is None:
        raise ValueError("must be an RFC 3339 date-time with a zone, e.g. 2026-11-25T12:00:00Z")
    fields = match.groups()
    days = _days_since_epoch(fields[0], fields[1], fields[2])
    hour, minute, second = int(fields[3]), int(fields[4]), int(fields[5])
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError("has an hour above 23, a minute above 59 or a second above 60")
    offset_min = 0
    if fields[7]:
        offset_hours, offset_minutes = int(fields[8]), int(fields[9])
        if offset_hours > 23 or offset_minutes > 59:
            raise ValueError("has a zone offset with hours above 23 or minutes above 59")
        offset_min = offset_hours * 60 + offset_minutes
        if fields[7] == "-":
            offset_min = -offset_min
    minute_ms = ((days * 24 + hour) * 60 + minute - offset_min) * 60_000
    if second == 60:
        if minute_ms // 60_000 % (24 * 60) != 23 * 60 + 59:
            raise ValueError("has second 60, which is only a leap second at 23:59:60 UTC")
        return minute_ms + 59_999
    fraction = fields[6] or ""
    return minute_ms + second * 1000 + int(fraction[:3].ljust(3, "0"))


@functools.lru_cache(maxsize=1024)
def _days_since_epoch(year: str, month: str, day: str) -> int:
    try:
        return date(int(year), int(month), int(day)).toordinal() - EPOCH_DAY
    except ValueError:
        raise ValueError(f"has no such date: {year}-{month}-{day}") from None


@functools.lru_cache(maxsize=4096)
def _second_prefix(seconds: int) -> str:
    days, rem = divmod(seconds, 86_400)
    hours, rem = divmod(rem, 3600)
    minutes, rem = divmod(rem, 60)
    date_text = datetime.fromtimestamp(days * 86400, tz=UTC).strftime("%Y-%m-%dT")
    return f"{date_text}{hours:02d}:{minutes:02d}:{rem:02d}."


@functools.lru_cache(maxsize=4096)
def format_ms(ms: int) -> str:
    """RFC 3339 in UTC with millisecond precision, e.g. 2026-11-25T12:00:00.000Z.

    Hot (every notification and API answer): cached, as the events of a batch mostly share
    their times, and all but the milliseconds is cached per second.
    """
    seconds, milli = divmod(ms, 1000)
    return f"{_second_prefix(seconds)}{milli:03d}Z"
