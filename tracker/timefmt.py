"""RFC 3339 parsing and formatting, in integer milliseconds since the epoch (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_rfc3339_ms(text: str) -> int:
    """Milliseconds since the epoch; ValueError for a malformed or zone-less timestamp."""
    if not isinstance(text, str) or not 20 <= len(text) <= 40 or text[10] not in "Tt":
        raise ValueError("not an RFC 3339 date-time")
    moment = datetime.fromisoformat(text.replace("z", "Z"))
    if moment.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return int(moment.timestamp() * 1000)


def format_ms(ms: int) -> str:
    """RFC 3339 in UTC with millisecond precision, e.g. 2026-11-25T12:00:00.000Z."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
