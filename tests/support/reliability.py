"""The reliability report: each fault test adds one row; the session writes the table.

``expected`` is what the event history says must fire: (conversation id, level) pairs.
``delivered`` counts expected pairs that arrived, ``lost`` those that never did,
``duplicates`` the extra arrivals of a pair already delivered (receivers dedupe them by
``event_id``), ``unexpected`` pairs that should never have fired (stale notifications).
``late_after_fault`` counts arrivals later than their due time, or the fault's end when
that is later, plus 5 s (guarantee 9: must be 0 where a live process could send them);
``out_of_order`` arrivals of a level lower than one already delivered for the same waiting
period (guarantee 7: must be 0).
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
    settings: str
    conversations: int
    expected: int
    delivered: int
    lost: int
    duplicates: int
    unexpected: int
    worst_lateness_ms: int | None
    late_after_fault: int | None = None  # None: the test has no single fault end to measure by
    out_of_order: int | None = None


ROWS: list[Row] = []

#: Guarantee 9: with the default settings, nothing a live process could send arrives later
#: than the fault's end plus this.
AFTER_FAULT_MS = 5000

HEADER = (
    "| fault | settings | conversations | expected notifications | delivered | lost | duplicates"
    " | worst lateness | later than fault + 5 s | out of order |"
    "\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One notification as the receiver got it."""

    conversation_id: str
    level: int
    waiting_since_ms: int
    due_ms: int
    received_ms: int


def late_after(arrivals: Iterable[Arrival], fault_end_ms: int) -> int:
    """Arrivals later than max(due, fault end) + AFTER_FAULT_MS."""
    return sum(1 for a in arrivals if a.received_ms > max(a.due_ms, fault_end_ms) + AFTER_FAULT_MS)


def out_of_order(arrivals: Iterable[Arrival]) -> int:
    """Arrivals of a level below one that arrived earlier in the same waiting period."""
    highest: dict[tuple[str, int], int] = {}
    count = 0
    for a in sorted(arrivals, key=lambda a: a.received_ms):
        period = (a.conversation_id, a.waiting_since_ms)
        if a.level < highest.get(period, 0):
            count += 1
        highest[period] = max(highest.get(period, 0), a.level)
    return count


def tally(
    fault: str,
    conversations: int,
    expected: set[Pair],
    arrived: Iterable[Pair],
    lateness_ms: Iterable[int] = (),
    *,
    allowed: set[Pair] | None = None,
    arrivals: Iterable[Arrival] | None = None,
    fault_end_ms: int | None = None,
    settings: str = "tuned",
) -> Row:
    """Compare what arrived with what must arrive, add the row to the report, return it.

    ``allowed``: pairs that may fire but need not (their outcome depends on the fault's timing).
    ``arrivals`` (with their times) give the out-of-order count, and with ``fault_end_ms``
    the count of those later than the fault's end plus 5 s. ``settings``: ``defaults`` when
    the pod ran with the shipped settings, ``tuned`` when recovery timings were shortened.
    """
    counts = collections.Counter(arrived)
    got = set(counts)
    late = list(lateness_ms)
    arrivals = list(arrivals) if arrivals is not None else None
    row = Row(
        fault=fault,
        settings=settings,
        conversations=conversations,
        expected=len(expected),
        delivered=len(got & expected),
        lost=len(expected - got),
        duplicates=sum(n - 1 for n in counts.values()),
        unexpected=len(got - expected - (allowed or set())),
        worst_lateness_ms=max(late) if late else None,
        late_after_fault=(
            late_after(arrivals, fault_end_ms)
            if arrivals is not None and fault_end_ms is not None
            else None
        ),
        out_of_order=out_of_order(arrivals) if arrivals is not None else None,
    )
    ROWS.append(row)
    return row


def table(rows: Iterable[Row]) -> str:
    lines = [HEADER]
    for r in rows:
        late = f"{r.worst_lateness_ms / 1000:.2f} s" if r.worst_lateness_ms is not None else "-"
        after = "-" if r.late_after_fault is None else str(r.late_after_fault)
        order = "-" if r.out_of_order is None else str(r.out_of_order)
        lines.append(
            f"| {r.fault} | {r.settings} | {r.conversations} | {r.expected} | {r.delivered}"
            f" | {r.lost} | {r.duplicates} | {late} | {after} | {order} |"
        )
    return "\n".join(lines) + "\n"


def write(path: Path) -> str:
    text = table(ROWS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
