"""Moved to tests/support/redis_server.py. This alias stays only until
tests/test_private_apis.py (owned by another change in flight) imports it from there."""

from tests.support.redis_server import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]
