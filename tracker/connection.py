"""The Redis client: one per process, reconnecting with backoff."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from tracker.settings import Settings

#: Errors that mean "Redis is not reachable right now": 503 at the API, back off in loops.
UNAVAILABLE = (ConnectionError, TimeoutError, BusyLoadingError, OSError)


def connect(settings: Settings, *, socket_timeout: float = 5.0, max_connections: int = 64) -> Redis:
    """A client for REDIS_URL; commands retry briefly on connection errors."""
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=socket_timeout,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=2.0,
        retry=retry,
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=15,
        client_name=f"tracker:{settings.pod_id}",
    )
    return Redis.from_pool(pool)
