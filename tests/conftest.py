"""Fixtures: a real redis-server per session (never the machine's own Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from tests.support.redis_server import RedisServer
from tracker.settings import Settings


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_sync(redis_server: RedisServer) -> Iterator[sync_redis.Redis]:
    """A synchronous client on an empty database of the test's own server (emptied again
    afterwards: a benchmark leaves a million keys behind)."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
async def redis(redis_server: RedisServer, redis_sync: sync_redis.Redis) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


def make_settings(redis_url: str, run_dir: Path, **overrides: str) -> Settings:
    env = {"REDIS_URL": redis_url, "RUN_DIR": str(run_dir), "POD_ID": "test-pod"}
    env.update(overrides)
    return Settings.from_env(env)


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return make_settings(redis_server.url, tmp_path / "run", TIMEOUT_INTERVAL_MS="1000")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The reliability table of the fault tests that ran, also written to var/reliability.md."""
    from tests.support import reliability

    if not reliability.ROWS:
        return
    text = reliability.write(terminalreporter.config.rootpath / "var" / "reliability.md")
    terminalreporter.write_sep("-", "reliability (var/reliability.md)")
    terminalreporter.write(text)
