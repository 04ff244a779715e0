"""Error replies as exception classes: the one place that reads Redis's error text.

redis-py turns an error reply into an exception by its first word (``NOSCRIPT`` becomes
`NoScriptError`, ``OOM`` `OutOfMemoryError`) through its parsers' table, for the hiredis
and the Python parser alike and for the API's lane, which parses with the same table. The
replies our scripts give and those redis-py leaves as a plain `ResponseError` are added to
that table here, when the package is imported, so callers catch classes and never match
strings.
"""

from __future__ import annotations

from redis._parsers import BaseParser
from redis.exceptions import ResponseError


class FencedError(ResponseError):
    """``FENCED``: a sweep ran with a lease token that is no longer the shard's (sweep.lua);
    another sweeper holds the shard now."""


class EpochRefused(ResponseError):
    """``EPOCH n ...``: a write script refused the layout epoch its caller routed by; the
    shard has seen epoch n (prelude.lua's `refuse_stale_epoch`)."""

    @property
    def epoch(self) -> int:
        number = str(self).split(" ", 1)[0]
        return int(number) if number.isdigit() else 0


class BusyGroupError(ResponseError):
    """``BUSYGROUP``: the consumer group exists already."""


class NoGroupError(ResponseError):
    """``NOGROUP``: the stream or its consumer group does not exist (any more)."""


class UnblockedError(ResponseError):
    """``UNBLOCKED``: Redis ended a blocked read because its stream was deleted."""


class BusyError(ResponseError):
    """``BUSY``: a script has run past lua-time-limit; Redis serves nothing else meanwhile."""


class MisconfError(ResponseError):
    """``MISCONF``: the last background save failed and Redis refuses writes."""


REPLY_CLASSES: dict[str, type[ResponseError]] = {
    "FENCED": FencedError,
    "EPOCH": EpochRefused,
    "BUSYGROUP": BusyGroupError,
    "NOGROUP": NoGroupError,
    "UNBLOCKED": UnblockedError,
    "BUSY": BusyError,
    "MISCONF": MisconfError,
}

BaseParser.EXCEPTION_CLASSES.update(REPLY_CLASSES)
