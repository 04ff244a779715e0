"""The exception hierarchy; the edges catch it (the API's request handling in api/edge.py,
the role loops, __main__). Redis's error replies have their classes in redis/replies.py."""

from __future__ import annotations


class TrackerError(Exception):
    """Base of every error the tracker raises on purpose."""


class ConfigError(TrackerError):
    """A setting is missing or invalid; the process exits with one line."""


class RequestError(TrackerError):
    """A client sent something we refuse: maps to a 4xx JSON error."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


class DeliveryError(TrackerError):
    """A sink could not deliver; ``permanent`` means retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
