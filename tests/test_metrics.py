"""Metric helpers: observe_many equals one observe per value; the HTTP tally flushes."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from tracker.metrics import HTTP_DURATION, HTTP_REQUESTS, LATENCY_BUCKETS, HttpTally, observe_many


def samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    ]


def test_observe_many_equals_one_observe_per_value() -> None:
    one, many = CollectorRegistry(), CollectorRegistry()
    single = Histogram("lateness_seconds", "test", buckets=LATENCY_BUCKETS, registry=one)
    batch = Histogram("lateness_seconds", "test", buckets=LATENCY_BUCKETS, registry=many)
    rng = random.Random(7)
    values = [rng.choice([0.0, *LATENCY_BUCKETS, 1e9]) for _ in range(300)]  # bounds exactly
    values += [rng.uniform(0, 20) for _ in range(300)]
    for v in values:
        single.observe(v)
    observe_many(batch, values[:250])
    observe_many(batch, values[250:])
    observe_many(batch, [])
    expected, got = samples(one), samples(many)
    assert [s[:2] for s in got] == [s[:2] for s in expected]
    for (name, _, value), (_, _, observed) in zip(expected, got, strict=True):
        assert observed == pytest.approx(value, rel=1e-12), name  # the sum's order differs


def test_the_http_tally_writes_its_counts_and_latencies_at_flush() -> None:
    tally = HttpTally()
    count = HTTP_REQUESTS.labels("/tally-test", "POST", "201")
    before = count._value.get()
    buckets_before = HTTP_DURATION.labels("/tally-test")._sum.get()
    for seconds in (0.001, 0.002, 0.5):
        tally.add("/tally-test", "POST", 201, seconds)
    assert count._value.get() == before  # in memory until flushed
    tally.flush()
    assert count._value.get() == before + 3
    assert HTTP_DURATION.labels("/tally-test")._sum.get() == pytest.approx(buckets_before + 0.503)
    tally.flush()  # nothing new: nothing written twice
    assert count._value.get() == before + 3
