"""Every Prometheus metric, and the pod-wide (multiprocess) exposition.

Import this module only after PROMETHEUS_MULTIPROC_DIR is set (tracker.__main__ does).
"""

from __future__ import annotations

import bisect
import collections
import os
from collections.abc import Iterable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from tracker.redis.connection import ERROR_KINDS
from tracker.settings import SINKS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RESPONSE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)

# Label values known in advance: every role process declares these series at 0 when it
# starts (`declare_known`), so the first scrape shows them and `increase()` sees the first
# event. Series whose label values are only known at run time (a route, a pod) start later.
LEVELS = ("1", "2", "3")
DEAD_LETTER_REASONS = ("permanent", "max_deliveries", "malformed", "unexpected")
SUPPRESS_REASONS = ("stale", "duplicate", "superseded")
LEADER_CHANGE_KINDS = ("gained", "lost")
#: The roles that count the Redis errors they back off from (phase 1's sweeper delivers too).
REDIS_ERROR_ROLES = ("sweeper", "consumer")

WAITING = Gauge(
    "waiting_conversations_count",
    "Conversations waiting for a customer answer, over the shards this pod leads (the seed's"
    " name; timeout_waiting_conversations is the same value)",
    multiprocess_mode="livesum",
)
WAITING_CONVERSATIONS = Gauge(
    "timeout_waiting_conversations",
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
    "When every sink had accepted a notification (written to the outbound stream, the webhook"
    " answered 2xx) minus its due time",
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
    "Notifications not sent at delivery time, by reason (stale, duplicate, superseded)",
    ["reason"],
)
LEASES_HELD = Gauge(
    "timeout_leases_held", "Shard leases held by this pod", ["pod"], multiprocess_mode="livesum"
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
RESTARTS = Counter(
    "tracker_process_restarts",
    "Times a program's process of this pod ended on its own and supervisord started it again"
    " (counted by the metrics listener)",
    ["program"],
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

# Made at scrape time by the API process (tracker/pod/podmetrics.py), not kept in files.
LAST_SWEEP = "timeout_last_sweep_timestamp_seconds"
BUILD_INFO = "tracker_build_info"
#: prometheus_client's ProcessCollector families, as tracker_process_resident_memory_bytes,
#: _cpu_seconds_total, _open_fds, _max_fds, _start_time_seconds, _virtual_memory_bytes.
PROCESS_NAMESPACE = "tracker"
ROLE_PROGRESS = "tracker_role_progress_timestamp_seconds"
ROLE_REDIS_FAILING = "tracker_role_redis_failing"


def declare_known(restart_programs: Sequence[str] = ()) -> None:
    """Create every series whose labels are known in advance at 0 in this process's files."""
    for level in LEVELS:
        SENT.labels(level)
    for reason in DEAD_LETTER_REASONS:
        DEAD_LETTERED.labels(reason)
    for reason in SUPPRESS_REASONS:
        SUPPRESSED.labels(reason)
    for sink in SINKS:
        DELIVERY_FAILED.labels(sink)
    for change in LEADER_CHANGE_KINDS:
        LEADER_CHANGES.labels(change)
    for role in REDIS_ERROR_ROLES:
        for kind in ERROR_KINDS:
            REDIS_ERRORS.labels(role, kind)
    for program in restart_programs:
        RESTARTS.labels(program)


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


def exposition(*collectors: Collector) -> tuple[bytes, str]:
    """Every process of this pod, aggregated (or this process alone outside a pod), and
    what `collectors` make at scrape time."""
    registry = CollectorRegistry()
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        MultiProcessCollector(registry, path=path)
    else:
        registry.register(_Everything())
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Everything(Collector):
    """This process's default registry, as one collector of another registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


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
