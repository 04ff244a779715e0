"""Benchmark fixtures: the tests' redis-server for the session, and the report written at the end.

`make bench` runs `pytest bench -o python_files=bench_*.py`, so `make test` never sees these.
"""

from __future__ import annotations

import time

import pytest

from bench import report as report_module
from bench.report import Report
from tests.conftest import redis_server, redis_sync

__all__ = ["redis_server", "redis_sync"]  # the tests' fixtures: a redis-server for the session

REPORT = Report()
_STARTED = time.time()


@pytest.fixture(scope="session")
def report() -> Report:
    return REPORT


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REPORT.values and not session.config.option.collectonly:
        report_module.write(REPORT, time.time() - _STARTED)
