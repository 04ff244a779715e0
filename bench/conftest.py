"""Benchmark fixtures: a real redis-server for the session, and the report written at the end.

`make bench` runs `pytest bench -o python_files=bench_*.py`, so `make test` never sees these.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis as sync_redis

from bench import report as report_module
from bench.report import Report
from tests.redis_server import RedisServer

REPORT = Report()
_STARTED = time.time()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_sync(redis_server: RedisServer) -> Iterator[sync_redis.Redis]:
    """A synchronous client on an empty database of the session's server."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture(scope="session")
def report() -> Report:
    return REPORT


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REPORT.values and not session.config.option.collectonly:
        report_module.write(REPORT, time.time() - _STARTED)
