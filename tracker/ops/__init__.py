"""Operator queries and actions, shared by the CLI (`tracker ...`) and the web console's
`/admin/...` endpoints: each returns plain data; the callers print it or answer it as JSON."""

from __future__ import annotations


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sort key: ``1795975119440-3`` -> (1795975119440, 3)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def readable(text: str) -> str:
    """A value as Redis held it, fit for JSON and a terminal: bytes that are not UTF-8
    (read with surrogateescape) shown as ``\\xNN``."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def readable_fields(fields: dict[str, str]) -> dict[str, str]:
    return {readable(k): readable(v) for k, v in fields.items()}
