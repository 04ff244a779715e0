"""Talking to Redis: the client, the API's lane, the Lua script runner, key names, Redis's
clock, backing off.
"""

from tracker.redis import replies as replies  # error replies as classes, from the start
