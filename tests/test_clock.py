"""The estimate of Redis's clock: the highest recent reading, following a clock stepped back."""

from __future__ import annotations

import pytest

from tracker.redis import clock
from tracker.redis.clock import RedisClock


class FakeTime:
    def __init__(self) -> None:
        self.wall_s = 1_000_000.0
        self.mono_s = 0.0

    def time(self) -> float:
        return self.wall_s

    def monotonic(self) -> float:
        return self.mono_s


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr("tracker.redis.clock.time.time", fake.time)
    monkeypatch.setattr("tracker.redis.clock.time.monotonic", fake.monotonic)
    return fake


def test_the_estimate_is_the_highest_reading_never_a_late_one(fake: FakeTime) -> None:
    """Redis runs 500 ms ahead; replies arrive 2, 40 and 0.5 ms after Redis read its clock."""
    c = RedisClock()
    local_ms = fake.wall_s * 1000
    for delay_ms in (2, 40, 0.5):
        c.observe(int(local_ms + 500 - delay_ms))
        assert c.offset_ms <= 500
    assert c.offset_ms == 499  # the freshest reading (0.5 ms late, truncated to the ms)
    assert c.now_ms() == local_ms + 499


def test_a_clock_stepped_back_is_followed_after_one_to_two_windows(fake: FakeTime) -> None:
    c = RedisClock()
    local_ms = fake.wall_s * 1000
    c.observe(int(local_ms + 500))
    fake.mono_s += clock.WINDOW_S
    c.observe(int(local_ms))  # Redis's clock (or ours) was stepped: now no offset
    assert c.offset_ms == 500  # the last window's reading still counts
    fake.mono_s += clock.WINDOW_S
    c.observe(int(local_ms))
    assert c.offset_ms == 0
