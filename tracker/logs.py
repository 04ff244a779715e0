"""Logging: configured once per process; key=value lines, or JSON lines when asked.

Every line names its process (``role``: ``api``, ``sweeper``, ``consumer-1``, ...), and a
line about an HTTP request carries that request's id (REQUEST_ID, set by the API's edge).
In JSON the ``key=value`` pairs of a message become fields of their own:
``log.info("api listening host=%s port=%d", host, port)`` gives
``{"msg": "api listening", "host": "0.0.0.0", "port": 8080, ...}``, each value of the
type the code passed (a ``%d`` stays a number, a ``%s`` of a string stays a string).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TextIO

import orjson

from tracker.timefmt import format_ms

#: The id of the HTTP request being handled in this task, if any.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

_FIELD = re.compile(r"(?:^|(?<= ))([A-Za-z_][A-Za-z0-9_.]*)=")
_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")

#: A message format, parsed: the text before the first field, then (key, value format) pairs.
Parsed = tuple[str, tuple[tuple[str, str], ...]]


def _split(text: str) -> Parsed:
    """'api listening host=%s port=%d' -> ('api listening', (('host', '%s'), ('port', '%d')))."""
    matches = list(_FIELD.finditer(text))
    if not matches:
        return text, ()
    fields = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        fields.append((match.group(1), text[match.end() : end].rstrip(" ")))
    return text[: matches[0].start()].rstrip(" "), tuple(fields)


_split_format = functools.lru_cache(maxsize=1024)(_split)  # formats are few: cache them


@functools.lru_cache(maxsize=1024)  # called with format strings only: few, cache them
def _specs(text: str) -> int:
    return sum(1 for spec in _SPEC.findall(text) if spec != "%%")


def fields_of(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """The message text before its first ``key=value`` pair, and the pairs."""
    args = record.args
    if not isinstance(args, tuple) or not args or not isinstance(record.msg, str):
        return _text_fields(record.getMessage())
    head, pairs = _split_format(record.msg)
    if _specs(record.msg) != len(args):  # not a plain %-format: fall back to the text
        return _text_fields(record.getMessage())
    used = _specs(head)
    message = head % args[:used]
    out: dict[str, Any] = {}
    for key, value_format in pairs:
        count = _specs(value_format)
        values = args[used : used + count]
        used += count
        out[key] = _value(value_format, values)
    return message, out


def _text_fields(text: str) -> tuple[str, dict[str, Any]]:
    head, pairs = _split(text)
    return head, dict(pairs)


def _value(value_format: str, values: tuple[Any, ...]) -> Any:
    """The value of one field: the argument itself for a lone %s, a number for a lone
    integer or float conversion, else the formatted text."""
    if value_format == "%s":
        return values[0]
    if len(values) == 1 and _SPEC.fullmatch(value_format):
        if value_format[-1] in "di":
            return int(values[0])
        if value_format[-1] in "eEfFgG":
            return float(value_format % values)
    return value_format % values


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (UTC, milliseconds), level, role, pod, pid, logger, msg,
    request_id (if any), the message's fields, exc (a traceback, if any)."""

    def __init__(self, role: str, pod: str) -> None:
        super().__init__()
        self.role = role
        self.pod = pod

    def format(self, record: logging.LogRecord) -> str:
        msg, fields = fields_of(record)
        data: dict[str, Any] = {
            "ts": format_ms(int(record.created * 1000)),
            "level": record.levelname.lower(),
            "role": self.role,
            "pod": self.pod,
            "pid": record.process,
            "logger": record.name,
            "msg": msg,
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            data["request_id"] = request_id
        for key, value in fields.items():
            if key in data and data[key] != value:
                key = f"{key}_"  # a field named like one of ours keeps its value
            data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-11-29T17:58:44.123Z INFO role=consumer-1 tracker.x: message [request_id=...]``"""

    def __init__(self, role: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s role={role} %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return format_ms(int(record.created * 1000))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = REQUEST_ID.get()
        if request_id is None:
            return line
        head, newline, rest = line.partition("\n")  # before a traceback, if any
        return f"{head} request_id={request_id}{newline}{rest}"


def configure(level: str, fmt: str, role: str, pod: str, stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(role, pod) if fmt == "json" else TextFormatter(role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if fmt == "json":
        sys.excepthook = _log_uncaught  # a crash's traceback as one JSON line, not raw text


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("tracker").critical("uncaught exception", exc_info=(kind, exc, tb))
