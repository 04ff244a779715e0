"""Every Prometheus metric, and the pod-wide (multiprocess) exposition.

Import this module only after PROMETHEUS_MULTIPROC_DIR is set (tracker.__main__ does).
"""

from __future__ import annotations

import bisect
import collections
import os
from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RESPONSE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)

WAITING = Gauge(
    "waiting_conversations_count",
    "Conversations waiting for a customer answer, over the shards this pod leads",
    multiprocess_mode="livesum",
)
SENT = Counter(
    "timeout_notifications_sent", "Notifications delivered to every sink, by level", ["level"]
)
LEADER_CHANGES = Counter(
    "timeout_leader_changes", "Shard leases this pod gained or lost", ["change"]
)
CHECK_DURATION = Histogram(
    "timeout_check_duration_seconds", "Time of one sweep of one shard", buckets=LATENCY_BUCKETS
)
RESPONSE_TIME = Histogram(
    "customer_response_time_seconds",
    "Time from the agent message to the customer's answer",
    buckets=RESPONSE_BUCKETS,
)
LATENESS = Histogram(
    "timeout_firing_lateness_seconds",
    "Delivery time minus due time of each notification",
    buckets=LATENCY_BUCKETS,
)
BACKLOG = Gauge(
    "timeout_stream_backlog",
    "Stream entries not yet read by the delivery group, over the shards this pod leads",
    multiprocess_mode="livesum",
)
PENDING = Gauge(
    "timeout_stream_pending",
    "Stream entries read but not yet acknowledged, over the shards this pod leads",
    multiprocess_mode="livesum",
)
OLDEST_PENDING = Gauge(
    "timeout_stream_oldest_pending_age_seconds",
    "Age of the oldest unacknowledged stream entry, over the shards this pod leads",
    multiprocess_mode="livemax",
)
DEAD_LETTERED = Counter(
    "timeout_dead_lettered", "Notifications moved to the dead-letter stream", ["reason"]
)
DEAD_LETTERS = Gauge(
    "timeout_dead_letters",
    "Entries now in the dead-letter streams of the shards this pod leads",
    multiprocess_mode="livesum",
)
WEBHOOK_BREAKER_STATE = Gauge(
    "timeout_webhook_breaker_state",
    "Webhook circuit breaker: 0 closed, 1 half-open (probing), 2 open (not sending);"
    " the worst over this pod's processes",
    multiprocess_mode="livemax",
)
WEBHOOK_BREAKER_OPENED = Counter(
    "timeout_webhook_breaker_opened", "Times the webhook circuit breaker opened"
)
DELIVERY_FAILED = Counter(
    "timeout_deliveries_failed", "Failed delivery attempts, by sink", ["sink"]
)
SUPPRESSED = Counter(
    "timeout_notifications_suppressed",
    "Notifications not sent at delivery time, by reason (stale, duplicate)",
    ["reason"],
)
LEASES_HELD = Gauge(
    "timeout_leases_held", "Shard leases held by this pod", ["pod"], multiprocess_mode="livesum"
)
LAST_SWEEP = Gauge(
    "timeout_last_sweep_timestamp_seconds",
    "Unix time of the last successful sweep of each shard this pod leads",
    ["shard"],
    multiprocess_mode="livemax",
)
STREAM_RECREATED = Counter(
    "timeout_stream_group_recreated", "Consumer groups recreated after their stream vanished"
)
REDIS_ERRORS = Counter(
    "timeout_redis_errors",
    "Redis errors a role loop backed off from, by role and kind (connection, timeout, oom,"
    " readonly, loading, ...)",
    ["role", "kind"],
)
HTTP_REQUESTS = Counter(
    "http_requests", "HTTP requests by route, method and status", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=LATENCY_BUCKETS,
)


class HttpTally:
    """HTTP requests counted in memory and written to the metrics once a `flush` (the API
    flushes every second and before each scrape it answers): in multiprocess mode a count
    and a latency are three locked mmap writes, more than the rest of a small request's
    bookkeeping."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self.durations: collections.defaultdict[str, list[float]] = collections.defaultdict(list)

    def add(self, route: str, method: str, status: int, seconds: float) -> None:
        self.counts[route, method, status] += 1
        self.durations[route].append(seconds)

    def flush(self) -> None:
        counts, self.counts = self.counts, collections.Counter()
        durations, self.durations = self.durations, collections.defaultdict(list)
        for (route, method, status), count in counts.items():
            HTTP_REQUESTS.labels(route, method, str(status)).inc(count)
        for route, values in durations.items():
            observe_many(HTTP_DURATION.labels(route), values)


def exposition() -> tuple[bytes, str]:
    """Every process of this pod, aggregated (or this process alone outside a pod)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe`` for each value, as one write per bucket touched and one for the
    sum, instead of two writes (each a locked mmap write in multiprocess mode) per value."""
    if not values:
        return
    bounds = histogram._upper_bounds
    counts = collections.Counter(bisect.bisect_left(bounds, v) for v in values)
    for bucket, count in counts.items():
        histogram._buckets[bucket].inc(count)
    histogram._sum.inc(sum(values))
