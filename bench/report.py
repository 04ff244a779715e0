"""The benchmark report: figures collected during `make bench`, written as JSON, Markdown, PNG."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

RESULTS_DIR = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, its target and the reference systems' numbers."""

    key: str
    label: str
    unit: str
    target: float | None = None  # None: reported, no target
    higher_is_better: bool = True
    ceiling: str | None = None  # key of the ceiling figure this one is a ratio of
    references: tuple[str, str, str] = ("", "", "")  # BullMQ 6, arq, redis-py + one Lua pop


ROWS = (
    Row(
        "store_schedule",
        "schedule/s, Store.apply_many",
        "events/s",
        ceiling="ceiling_evalsha_track",
        references=("~30,000", "6,700", "~137,000"),
    ),
    Row(
        "http_events_schedule",
        "schedule/s, POST /events (1 API process)",
        "events/s",
        target=100_000,
        ceiling="ceiling_evalsha_track",
    ),
    Row(
        "store_cancel",
        "cancel/s, Store.apply_many",
        "events/s",
        ceiling="ceiling_evalsha_track",
        references=("~50,000", "16,000", "~185,000"),
    ),
    Row(
        "http_events_cancel",
        "cancel/s, POST /events (1 API process)",
        "events/s",
        target=100_000,
        ceiling="ceiling_evalsha_track",
    ),
    Row(
        "spread_stream_rate",
        "due over 1 s (50,000/s offered), stream sink: delivered/s",
        "notifications/s",
        target=40_000,
        ceiling="ceiling_xadd",
    ),
    Row(
        "spread_stream_p99",
        "due over 1 s, stream sink: lateness p99 at the reader",
        "ms",
        target=50,
        higher_is_better=False,
    ),
    Row(
        "same_ms_stream_rate",
        "50,000 due on the same ms, stream sink: delivered/s",
        "notifications/s",
    ),
    Row(
        "same_ms_stream_p99",
        "50,000 due on the same ms, stream sink: lateness p99 at the reader",
        "ms",
        target=250,
        higher_is_better=False,
    ),
    Row(
        "steady_stream_p99",
        "200/s, stream sink: lateness p99 at the reader",
        "ms",
        target=10,
        higher_is_better=False,
    ),
    Row(
        "spread_webhook_rate",
        "due over 1 s, webhook sink: delivered/s",
        "notifications/s",
    ),
    Row(
        "spread_webhook_vs_bullmq",
        "due over 1 s, webhook sink: delivered/s, times BullMQ's in this run",
        "x",
        target=2,
    ),
    Row(
        "spread_webhook_p99",
        "due over 1 s, webhook sink: lateness p99 at the receiver",
        "ms",
        higher_is_better=False,
    ),
    Row(
        "same_ms_webhook_rate",
        "50,000 due on the same ms, webhook sink: delivered/s",
        "notifications/s",
    ),
    Row(
        "same_ms_webhook_vs_bullmq",
        "50,000 due on the same ms, webhook sink: delivered/s, times BullMQ's in this run",
        "x",
        target=2,
    ),
    Row(
        "same_ms_webhook_p99",
        "50,000 due on the same ms, webhook sink: lateness p99 at the receiver",
        "ms",
        higher_is_better=False,
    ),
    Row(
        "10k_webhook_p99",
        "10,000/s offered for 5 s, webhook sink: lateness p99 at the receiver",
        "ms",
        target=250,
        higher_is_better=False,
    ),
    Row(
        "phase1_tail_worst",
        "phase 1, 300 conversations at once, ten runs: worst fired_at - due_at",
        "ms",
        target=50,
        higher_is_better=False,
    ),
    Row(
        "phase2_tail_worst",
        "phase 2, 300 conversations at once, ten runs: worst fired_at - due_at",
        "ms",
        target=50,
        higher_is_better=False,
    ),
    Row(
        "commands_per_conversation",
        "Redis commands per conversation (due over 1 s, stream sink)",
        "commands",
        target=11,
        higher_is_better=False,
        references=("~33", "16-36", "~1.6"),
    ),
    Row(
        "http_single",
        "HTTP single event (agent-message), wrk, 1 API process",
        "req/s",
        target=0.6,
        ceiling="ceiling_bare_http",
    ),
    Row(
        "http_single_two",
        "HTTP single event, 2 API processes on one port (API_PROCESSES=2), wrk -c128",
        "req/s",
        ceiling="http_single_one_c128",
    ),
    *(
        Row(f"sweep_masters_{m}", f"sweep throughput, Redis Cluster, {m} master(s)", "fired/s")
        for m in (1, 2, 3)
    ),
    Row(
        "memory_per_conversation",
        "Redis memory per waiting conversation (1M)",
        "bytes",
        target=250,
        higher_is_better=False,
    ),
    Row(
        "history_bytes_per_delivery",
        "Redis bytes of history per delivered notification (a conversation's first)",
        "bytes",
        higher_is_better=False,
    ),
)

CEILINGS = (
    Row("ceiling_zadd", "ceiling: redis-benchmark -P 16 ZADD", "ops/s"),
    Row(
        "ceiling_xadd", "ceiling: redis-benchmark -P 16 XADD (the sweep's one-field entry)", "ops/s"
    ),
    Row(
        "ceiling_evalsha_track",
        "ceiling: redis-benchmark -P 16 EVALSHA apply.lua, 64 agent messages a call",
        "events/s",
    ),
    Row("ceiling_bare_http", "ceiling: bare aiohttp+uvloop handler, wrk", "req/s"),
    Row("http_single_one_c128", "baseline: 1 API process, wrk -c128", "req/s"),
)


@dataclass
class Report:
    """What this run measured: one value per figure key, plus details and plotted series."""

    started: float = field(default_factory=time.time)
    values: dict[str, float] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, value: float, **detail: Any) -> None:
        self.values[key] = value
        self.details[key] = detail

    def ratio(self, row: Row) -> float | None:
        measured = self.details.get(row.key, {}).get("ratio")
        if measured is not None:  # the median of pairwise ratios, measured back to back
            return float(measured)
        if row.ceiling is None or row.ceiling not in self.values or row.key not in self.values:
            return None
        ceiling = self.values[row.ceiling]
        return self.values[row.key] / ceiling if ceiling else None

    def status(self, row: Row) -> str:
        if row.key not in self.values:
            return "not run"
        if row.target is None:
            return "reported"
        # the HTTP single-event target is a ratio to the bare handler
        value = self.ratio(row) if row.key == "http_single" else self.values[row.key]
        if value is None:
            return "not run"
        ok = value >= row.target if row.higher_is_better else value <= row.target
        return "met" if ok else "NOT met"

    def to_json(self, duration_s: float) -> dict[str, Any]:
        rows = []
        for row in (*ROWS, *CEILINGS):
            rows.append(
                {
                    "key": row.key,
                    "label": row.label,
                    "unit": row.unit,
                    "value": self.values.get(row.key),
                    "target": row.target,
                    "status": self.status(row),
                    "ceiling": row.ceiling,
                    "ratio_to_ceiling": self.ratio(row),
                    "references": dict(
                        zip(("bullmq", "arq", "minimal"), row.references, strict=True)
                    ),
                    "detail": self.details.get(row.key, {}),
                }
            )
        return {
            "machine": machine(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "duration_s": round(duration_s, 1),
            "figures": rows,
            "series": self.series,
        }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("ms", "commands") or abs(value) < 100:
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _target(row: Row) -> str:
    if row.target is None:
        return "-"
    if row.key == "http_single":
        return ">= 60% of bare"
    sign = ">=" if row.higher_is_better else "<="
    return f"{sign} {row.target:,.0f}"


def markdown(report: Report, duration_s: float) -> str:
    m = machine()
    lines = [
        f"Machine: {m['nproc']} cores, {m['cpu']}, Redis {m['redis']}, Python {m['python']};"
        f" `make bench` took {duration_s / 60:.1f} min on {m['date']} at commit {m['commit']}.",
        "",
        "| figure | measured | unit | target | status | ratio to ceiling"
        " | BullMQ 6 | arq | redis-py + Lua pop |",
        "|---|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for row in ROWS:
        ratio = report.ratio(row)
        ceiling_label = next((c.label for c in CEILINGS if c.key == row.ceiling), "")
        ratio_text = "-" if ratio is None else f"{ratio:.0%} of {ceiling_label.split(': ')[-1]}"
        lines.append(
            f"| {row.label} | {_fmt(report.values.get(row.key), row.unit)} | {row.unit}"
            f" | {_target(row)} | {report.status(row)} | {ratio_text}"
            f" | {' | '.join(r or '-' for r in row.references)} |"
        )
    for row in CEILINGS:
        lines.append(
            f"| {row.label} | {_fmt(report.values.get(row.key), row.unit)} | {row.unit}"
            " | - | measured | - | - | - | - |"
        )
    lines += ["", "Measured where the user is, in this same run:", "", comparison(report)]
    return "\n".join(lines) + "\n"


#: The workloads of bench/bench_lateness.py, as the comparison table names them.
CASES = (
    ("spread_stream", "due over 1 s (50,000/s), stream sink"),
    ("same_ms_stream", "50,000 due on the same ms, stream sink"),
    ("steady_stream", "200/s, stream sink"),
    ("spread_webhook", "due over 1 s (50,000/s), webhook sink"),
    ("same_ms_webhook", "50,000 due on the same ms, webhook sink"),
    ("10k_webhook", "10,000/s for 5 s, webhook sink"),
)
SYSTEMS = ("tracker", "BullMQ", "bare mover")


def comparison(report: Report) -> str:
    """Each workload through each system, measured where the user is, in this one run."""
    lines = [
        "| workload | figure | tracker | BullMQ 6.7 (concurrency 50) | bare mover (no API,"
        " no guarantees) |",
        "|---|---|---:|---:|---:|",
    ]
    for case, label in CASES:
        if f"{case}:tracker:rate" not in report.values:
            continue

        def cell(system: str, figure: str, case: str = case) -> str:
            value = report.values.get(f"{case}:{system}:{figure}")
            return "-" if value is None else f"{value:,.0f}"

        def late(system: str, case: str = case) -> str:
            p50, p99 = cell(system, "p50"), cell(system, "p99")
            return "-" if p99 == "-" else f"{p50} / {p99}"

        lines.append(f"| {label} | delivered/s | {' | '.join(cell(s, 'rate') for s in SYSTEMS)} |")
        lines.append(
            f"| | lateness p50 / p99 at the user, ms | {' | '.join(late(s) for s in SYSTEMS)} |"
        )
        lines.append(
            f"| | tracker's own fired_at - due_at p99, ms | {cell('tracker', 'fired_p99')} | | |"
        )
        lines.append(
            f"| | hand-off, fired_at to the user, p99, ms | {cell('tracker', 'handoff_p99')} | | |"
        )
    return "\n".join(lines) + "\n"


def plot(report: Report, path: Path) -> None:
    """Lateness distributions and delivered/s over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    for name, label in (
        ("spread_stream", "due over 1 s, stream sink"),
        ("same_ms_stream", "due on one ms, stream sink"),
        ("spread_webhook", "due over 1 s, webhook sink"),
        ("steady_stream", "200/s"),
    ):
        s = report.series.get(name)
        if not s or not s["lateness_cdf"]:
            continue
        xs, ys = zip(*s["lateness_cdf"], strict=True)
        left.plot(xs, ys, label=label)
    left.set_xscale("symlog", linthresh=1)
    left.set_xlabel("lateness at the user, received - due_at (ms)")
    left.set_ylabel("fraction of notifications")
    left.set_title("Lateness distribution (CDF)")
    left.axvline(50, color="grey", linestyle=":", linewidth=1)
    left.grid(True, alpha=0.3)
    if left.lines[1:]:  # the 50 ms line is always there
        left.legend()
    for name, label in (("spread_stream", "stream sink"), ("spread_webhook", "webhook sink")):
        s = report.series.get(name)
        if not s or not s["delivered_per_s"]:
            continue
        xs, ys = zip(*s["delivered_per_s"], strict=True)
        right.step(xs, ys, where="post", label=f"delivered/s, {label}")
    due = next(
        (
            report.series[n]["due_per_s"]
            for n in ("spread_stream", "spread_webhook")
            if report.series.get(n, {}).get("due_per_s")
        ),
        None,
    )
    if due:
        dx, dy = zip(*due, strict=True)
        right.step(dx, dy, where="post", color="grey", linestyle=":", label="due/s (not cancelled)")
    right.set_xlabel("seconds after the first due time")
    right.set_ylabel("notifications/s (100 ms bins)")
    right.set_title("due over 1 s: due and delivered per second")
    right.grid(True, alpha=0.3)
    if right.lines:
        right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: Report, duration_s: float, directory: Path = RESULTS_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data = report.to_json(duration_s)
    (directory / "latest.json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    (directory / "latest.md").write_text(markdown(report, duration_s))
    plot(report, directory / "latest.png")


def _first_line(command: list[str], pattern: str) -> str:
    if shutil.which(command[0]) is None:
        return "?"
    out = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    found = re.search(pattern, out)
    return found.group(1) if found else "?"


def machine() -> dict[str, Any]:
    cpu = "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = found.group(1).strip() if found else "?"
    return {
        "nproc": _nproc(),
        "cpu": cpu,
        "redis": _first_line(["redis-server", "--version"], r"v=(\S+)"),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "commit": _first_line(["git", "describe", "--always", "--dirty"], r"(\S+)"),
    }


def _nproc() -> int:
    return len(os.sched_getaffinity(0))
