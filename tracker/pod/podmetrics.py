"""What the API adds to the pod's /metrics at scrape time, from the pod's own state rather
than from the multiprocess files: the build, every process of the pod (from supervisord and
/proc), each role's last progress (RUN_DIR/roles), and each shard's last sweep.

A shard's series exist for the shards of the current layout only: this pod's last sweep of
the shards its sweeper leads, 0 for the others. A reshard that removes shards removes their
series at the next scrape; every pod exports every shard, so a shard no pod sweeps shows.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import time
from collections.abc import Iterable

from prometheus_client import Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from tracker import metrics
from tracker.pod import heartbeat
from tracker.pod.programs import read_pod
from tracker.settings import Settings
from tracker.timing import progress

#: The API process itself when no supervisord answers (roles started one by one).
ALONE = ("api", "api")


@functools.cache
def version() -> str:
    return importlib.metadata.version("tracker")


class PodCollector(Collector):
    """One scrape's worth of pod state (`shard_span`: the shards of the layout the API
    follows, both layouts' while a reshard runs)."""

    def __init__(self, settings: Settings, shard_span: int) -> None:
        self.settings = settings
        self.shard_span = shard_span

    def collect(self) -> Iterable[Metric]:
        yield self.build_info()
        yield from self.processes()
        yield from self.roles()
        yield self.last_sweeps()

    def build_info(self) -> Metric:
        family = GaugeMetricFamily(
            metrics.BUILD_INFO,
            "The tracker's version and the commit it was built from (TRACKER_COMMIT)",
            labels=["version", "commit"],
        )
        family.add_metric([version(), self.settings.build_commit], 1)
        return family

    def processes(self) -> list[Metric]:
        """RSS, CPU, open and max fds, start time of every process of the pod, labelled by
        program (``consumer``) and process (``consumer-1``)."""
        pod = read_pod(self.settings)
        if pod is None:
            procs = [(*ALONE, os.getpid())]
        else:
            procs = [("supervisord", "supervisord", pod.supervisord_pid)]
            procs += [(p.group, p.name, p.pid) for p in pod.programs if p.pid]
        families: dict[str, Metric] = {}
        for program, process, pid in procs:
            collector = ProcessCollector(
                metrics.PROCESS_NAMESPACE, pid=functools.partial(int, pid), registry=None
            )
            for family in collector.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    labels = {"program": program, "process": process}
                    merged.add_sample(sample.name, labels, sample.value)
        return list(families.values())

    def roles(self) -> list[Metric]:
        """Each role's last completed loop round, and whether it backs off from Redis now."""
        progress_family = GaugeMetricFamily(
            metrics.ROLE_PROGRESS,
            "Unix time each role process of this pod last completed a loop round (0: none yet)",
            labels=["role"],
        )
        failing = GaugeMetricFamily(
            metrics.ROLE_REDIS_FAILING,
            "1 while a role process of this pod backs off from a Redis error, else 0",
            labels=["role"],
        )
        for state in heartbeat.read_all(self.settings):
            progress_family.add_metric([state.name], state.progress_ms / 1000)
            failing.add_metric([state.name], 0 if state.error_kind is None else 1)
        return [progress_family, failing]

    def last_sweeps(self) -> Metric:
        family = GaugeMetricFamily(
            metrics.LAST_SWEEP,
            "Unix time this pod last swept each shard of the layout (0: not led here)",
            labels=["shard"],
        )
        led = progress.led_shards(self.settings, int(time.time() * 1000))
        for shard in range(self.shard_span):
            family.add_metric([str(shard)], led.get(shard, 0) / 1000)
        return family
