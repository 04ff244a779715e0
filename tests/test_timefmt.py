"""RFC 3339 formatting and parsing round-trip, against the standard library."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.timefmt import format_ms, parse_rfc3339_ms

MS = st.integers(min_value=0, max_value=4_102_444_800_000)  # up to 2100


@given(MS)
def test_format_matches_the_standard_library(ms: int) -> None:
    expected = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    assert format_ms(ms) == f"{expected}{ms % 1000:03d}Z"


@given(MS)
def test_parse_reads_back_what_format_wrote(ms: int) -> None:
    assert parse_rfc3339_ms(format_ms(ms)) == ms


OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)


@given(MS, OFFSETS)
def test_parse_agrees_with_the_standard_library_in_any_zone(ms: int, offset_min: int) -> None:
    zone = timezone(timedelta(minutes=offset_min))
    text = (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .astimezone(zone)
        .isoformat(timespec="milliseconds")
    )
    assert parse_rfc3339_ms(text) == ms


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-01-01T10:00:00+05:60", "zone offset"),  # was read as +06:00
        ("2026-01-01T10:00:00-00:61", "zone offset"),
        ("2026-01-01T10:00:00+24:00", "zone offset"),
        ("2026-06-30T12:00:60Z", "leap second at 23:59:60 UTC"),
        ("2026-06-30T23:59:61Z", "second above 60"),
        ("2026-06-30T24:00:00Z", "hour above 23"),
        ("2025-02-29T00:00:00Z", "no such date: 2025-02-29"),
        ("2026-01-01T10:00:00", "with a zone"),
        ("2026-01-01 10:00:00Z", "with a zone"),
    ],
)
def test_a_bad_timestamp_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_rfc3339_ms(text)


@pytest.mark.parametrize(
    "text",
    [
        "2016-12-31T23:59:60Z",
        "2016-12-31T23:59:60.5Z",
        "2017-01-01T00:59:60+01:00",  # the same leap second, written an hour ahead
        "2016-12-31T18:59:60-05:00",
    ],
)
def test_a_leap_second_reads_as_the_last_millisecond_of_its_minute(text: str) -> None:
    assert format_ms(parse_rfc3339_ms(text)) == "2016-12-31T23:59:59.999Z"


def test_minus_zero_offset_and_lower_case_letters_are_utc() -> None:
    assert parse_rfc3339_ms("2026-01-01t10:00:00.250z") == parse_rfc3339_ms(
        "2026-01-01T10:00:00.250-00:00"
    )
