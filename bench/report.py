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
        "burst_stream_rate",
        "fired+delivered/s, 100K burst, stream sink, 2 consumers",
        "notifications/s",
        target=40_000,
        ceiling="ceiling_xadd",
        references=("~20,000", "2,500", "~50,000"),
    ),
    Row(
        "burst_webhook_rate",
        "fired+delivered/s, 100K burst, webhook sink, 2 consumers",
        "notifications/s",
    ),
    Row(
        "burst_stream_p99",
        "lateness p99, 100K burst (fired_at - due_at)",
        "ms",
        target=50,
        higher_is_better=False,
        references=("~1,500", "~18,000", "~1"),
    ),
    Row(
        "burst_webhook_p99",
        "lateness p99, 100K burst, webhook (received - due_at)",
        "ms",
        higher_is_better=False,
    ),
    Row(
        "steady_p99",
        "lateness p99 at a steady 200 fires/s, CHECK_INTERVAL_MS=1000",
        "ms",
        target=10,
        higher_is_better=False,
        references=("~96", "~11", "~1"),
    ),
    Row(
        "commands_per_conversation",
        "Redis commands per conversation (100K burst)",
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
    return "\n".join(lines) + "\n"


def plot(report: Report, path: Path) -> None:
    """Lateness distributions and delivered/s over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    for name, label in (
        ("burst_stream", "100K burst, stream sink"),
        ("burst_webhook", "100K burst, webhook sink"),
        ("steady", "steady 200 fires/s"),
    ):
        s = report.series.get(name)
        if not s or not s["lateness_cdf"]:
            continue
        xs, ys = zip(*s["lateness_cdf"], strict=True)
        left.plot(xs, ys, label=label)
    left.set_xscale("symlog", linthresh=1)
    left.set_xlabel("lateness, fired_at - due_at (ms)")
    left.set_ylabel("fraction of notifications")
    left.set_title("Lateness distribution (CDF)")
    left.axvline(50, color="grey", linestyle=":", linewidth=1)
    left.grid(True, alpha=0.3)
    if left.lines[1:]:  # the 50 ms line is always there
        left.legend()
    for name, label in (("burst_stream", "stream sink"), ("burst_webhook", "webhook sink")):
        s = report.series.get(name)
        if not s or not s["delivered_per_s"]:
            continue
        xs, ys = zip(*s["delivered_per_s"], strict=True)
        right.step(xs, ys, where="post", label=f"delivered/s, {label}")
    due = next(
        (
            report.series[n]["due_per_s"]
            for n in ("burst_stream", "burst_webhook")
            if report.series.get(n, {}).get("due_per_s")
        ),
        None,
    )
    if due:
        dx, dy = zip(*due, strict=True)
        right.step(dx, dy, where="post", color="grey", linestyle=":", label="due/s (not cancelled)")
    right.set_xlabel("seconds after the first due time")
    right.set_ylabel("notifications/s (100 ms bins)")
    right.set_title("100K burst: due and delivered per second")
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
