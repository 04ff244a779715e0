"""Talking to Redis: the client, the API's lane, the Lua script runner, key names, Redis's
clock, backing off.
"""
