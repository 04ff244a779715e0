"""RFC 3339 parsing and formatting, in integer milliseconds since the epoch (UTC)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

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
    return int(moment.timestamp() * 1000)


def format_ms(ms: int) -> str:
    """RFC 3339 in UTC with millisecond precision, e.g. 2026-11-25T12:00:00.000Z."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
