"""supervisord event listeners.

``metrics``: when a program's process exits, mark its multiprocess metric files dead and
fold its counters and histograms into one archive file, so files do not pile up; count each
exit supervisord restarts (ended on its own, or failed to start) in
``tracker_process_restarts_total{program}``.
``fatal``: when a program goes FATAL, stop supervisord so the orchestrator restarts the pod.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict

from tracker import metrics
from tracker.pod.supervisor import tracker_programs
from tracker.settings import Settings

log = logging.getLogger(__name__)


def _read_event(stdin: TextIO) -> tuple[dict[str, str], dict[str, str]]:
    header = dict(token.split(":", 1) for token in stdin.readline().split())
    payload = stdin.read(int(header["len"]))
    first, _, _ = payload.partition("\n")
    return header, dict(token.split(":", 1) for token in first.split())


#: A process that ended on its own (EXITED) or died while starting (BACKOFF): supervisord
#: starts it again (every program has autorestart=true).
RESTART_EVENTS = frozenset({"PROCESS_STATE_EXITED", "PROCESS_STATE_BACKOFF"})


def serve(
    kind: str, settings: Settings, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout
) -> None:
    """The listener protocol: READY, read one event, act, RESULT 2 OK; forever."""
    metrics_dir = settings.metrics_dir
    if kind == "metrics":
        metrics.declare_known(tracker_programs(settings))
    while True:
        stdout.write("READY\n")
        stdout.flush()
        header, body = _read_event(stdin)
        try:
            handle(kind, header["eventname"], body, metrics_dir)
        except Exception:
            log.exception("listener failed event=%s", header.get("eventname"))
        stdout.write("RESULT 2\nOK")
        stdout.flush()


def handle(kind: str, event: str, body: dict[str, str], metrics_dir: Path) -> None:
    if kind == "metrics" and event in RESTART_EVENTS:
        metrics.RESTARTS.labels(body.get("groupname", "unknown")).inc()
        log.warning(
            "process ended, supervisord restarts it process=%s from=%s",
            body.get("processname"),
            body.get("from_state"),
        )
    if kind == "metrics" and event in ("PROCESS_STATE_EXITED", "PROCESS_STATE_STOPPED"):
        pid = body.get("pid")
        if pid and pid.isdigit():
            multiprocess.mark_process_dead(int(pid), str(metrics_dir))
            fold_into_archive(int(pid), metrics_dir)
            log.info("metrics files marked dead process=%s pid=%s", body.get("processname"), pid)
    elif kind == "fatal" and event == "PROCESS_STATE_FATAL":
        log.error("program FATAL, stopping supervisord process=%s", body.get("processname"))
        os.kill(os.getppid(), signal.SIGTERM)


def fold_into_archive(pid: int, metrics_dir: Path) -> None:
    """Add a dead process's counter and histogram values to ``<type>_archive.db``."""
    for kind in ("counter", "histogram"):
        dead = metrics_dir / f"{kind}_{pid}.db"
        if not dead.exists():
            continue
        archive = MmapedDict(str(metrics_dir / f"{kind}_archive.db"))
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(dead)):
                current, _ = archive.read_value(key)
                archive.write_value(key, current + value, timestamp)
        finally:
            archive.close()
        dead.unlink()
