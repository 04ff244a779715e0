"""RFC 3339 formatting and parsing round-trip, against the standard library."""

from __future__ import annotations

from datetime import UTC, datetime

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
