"""The reliability report: each fault test adds one row; the session writes the table.

``expected`` is what the event history says must fire: (conversation id, level) pairs.
``delivered`` counts expected pairs that arrived, ``lost`` those that never did,
``duplicates`` the extra arrivals of a pair already delivered (receivers dedupe them by
``event_id``), ``unexpected`` pairs that should never have fired (stale notifications).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

Pair = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Row:
    fault: str
    conversations: int
    expected: int
    delivered: int
    lost: int
    duplicates: int
    unexpected: int
    worst_lateness_ms: int | None


ROWS: list[Row] = []

HEADER = (
    "| fault | conversations | expected notifications | delivered | lost | duplicates"
    " | worst lateness |\n|---|---:|---:|---:|---:|---:|---:|"
)


def tally(
    fault: str,
    conversations: int,
    expected: set[Pair],
    arrived: Iterable[Pair],
    lateness_ms: Iterable[int] = (),
    *,
    allowed: set[Pair] | None = None,
) -> Row:
    """Compare what arrived with what must arrive, add the row to the report, return it.

    ``allowed``: pairs that may fire but need not (their outcome depends on the fault's timing).
    """
    counts = collections.Counter(arrived)
    got = set(counts)
    late = list(lateness_ms)
    row = Row(
        fault=fault,
        conversations=conversations,
        expected=len(expected),
        delivered=len(got & expected),
        lost=len(expected - got),
        duplicates=sum(n - 1 for n in counts.values()),
        unexpected=len(got - expected - (allowed or set())),
        worst_lateness_ms=max(late) if late else None,
    )
    ROWS.append(row)
    return row


def table(rows: Iterable[Row]) -> str:
    lines = [HEADER]
    for r in rows:
        late = f"{r.worst_lateness_ms / 1000:.2f} s" if r.worst_lateness_ms is not None else "-"
        lines.append(
            f"| {r.fault} | {r.conversations} | {r.expected} | {r.delivered} | {r.lost}"
            f" | {r.duplicates} | {late} |"
        )
    return "\n".join(lines) + "\n"


def write(path: Path) -> str:
    text = table(ROWS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
