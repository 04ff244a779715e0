"""The exception hierarchy; the edges (API middleware, role loops, __main__) catch it."""

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


class FencedError(TrackerError):
    """A shard script ran without the lease it was given: this process lost it."""


class DeliveryError(TrackerError):
    """A sink could not deliver; ``permanent`` means retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
