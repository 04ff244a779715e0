"""Plain-text rendering for the operator CLI: tables whose columns fit their widest cell
(pod names from Kubernetes run long), and cells made safe to print on a terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def clean(value: Any) -> str:
    """`value` as one printable line: control characters (a receiver's error text may hold
    newlines or terminal escapes) shown as escapes, never sent to the terminal."""
    if value is None:
        return "-"
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str] = ()) -> str:
    """Columns as wide as their widest cell, two spaces apart; the last column unpadded.
    Columns named in `right` are right-aligned (numbers)."""
    cells = [[clean(c) for c in columns], *([clean(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    last = len(columns) - 1
    lines = []
    for row in cells:
        parts = [
            cell.rjust(width) if name in right else cell if i == last else cell.ljust(width)
            for i, (name, cell, width) in enumerate(zip(columns, row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def duration(ms: int | None) -> str:
    """A duration for people: 850ms, 12.3s, 4m05s, 2h03m, 3d04h."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86_400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86_400}d{seconds % 86_400 // 3600:02d}h"


def size(n: int) -> str:
    """Bytes for people: 812 B, 1.2 MB, 3.4 GB."""
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
