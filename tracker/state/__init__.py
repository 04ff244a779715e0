"""Conversations in Redis: applying events, reading a conversation and its history, moving it
between shards.
"""
