"""promtool's unit-test series, read and rewritten to start where a real pod starts.

A test series is written as a pod would export it from its first scrape. `from_scrape`
checks each against a real scrape of a fresh pod: a series the pod shows from the start
keeps its values (a counter's shifted to start where the pod's stood); a counter the pod
does not show yet is absent until its first change, as Prometheus would see it; a series
the pod does not export at all (a name or label value it does not have) fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

#: Labels Prometheus attaches to every scraped series (target labels), not the pod.
TARGET_LABELS = frozenset({"job", "instance", "namespace"})
#: Made by Prometheus, not by the tracker.
PROMETHEUS_SERIES = frozenset({"up"})

Key = tuple[str, frozenset[tuple[str, str]]]

_SERIES = re.compile(r"^\s*(?P<name>[A-Za-z_:][\w:]*)\s*(?:\{(?P<labels>.*)\})?\s*$")
_LABEL = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')
_NUMBER = r"\d+(?:\.\d+)?(?:e[-+]?\d+)?"
_TERM = re.compile(rf"^(?P<start>[-+]?{_NUMBER}|_)(?:(?P<step>[-+]{_NUMBER})?x(?P<times>\d+))?$")


@dataclass(frozen=True)
class Fresh:
    """A fresh pod's first scrape: each sample's value, and which samples are counters'."""

    values: Mapping[Key, float]
    counters: frozenset[str]  # sample names of counter and histogram families

    @classmethod
    def parse(cls, text: str) -> Fresh:
        values: dict[Key, float] = {}
        counters: set[str] = set()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name, frozenset(sample.labels.items())] = sample.value
                if family.type in ("counter", "histogram"):
                    counters.add(sample.name)
        return cls(values, frozenset(counters))


def parse_series(series: str) -> tuple[str, dict[str, str]]:
    found = _SERIES.match(series)
    assert found, f"not a series: {series!r}"
    return found["name"], dict(_LABEL.findall(found["labels"] or ""))


def expand(values: str) -> list[str]:
    """promtool's notation, one value per step: `a+bxn` is n+1 values, `axn` n+1 values,
    `_xn` n absent ones, `stale` a staleness marker."""
    out: list[str] = []
    for term in values.split():
        if term == "stale":
            out.append(term)
            continue
        found = _TERM.match(term)
        assert found, f"not a promtool value: {term!r}"
        start, step, times = found["start"], found["step"], found["times"]
        if start == "_":
            out += ["_"] * (int(times) if times else 1)
            continue
        count = int(times) + 1 if times else 1
        delta = float(step) if step else 0.0
        out += [_number(float(start) + i * delta) for i in range(count)]
    return out


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _shift(value: str, offset: float) -> str:
    return value if value in ("_", "stale") else _number(float(value) + offset)


def _is_counter(name: str, fresh: Fresh) -> bool:
    return name in fresh.counters or name.endswith(("_total", "_bucket", "_count", "_sum"))


def from_scrape(tests: Iterable[dict[str, Any]], fresh: Fresh) -> list[str]:
    """Rewrite each test's input series in place as Prometheus would scrape them from the
    fresh pod; returns what changed (one line per series), and fails on a series whose
    name or labels the pod does not export at all."""
    changed = []
    for test in tests:
        for item in test["input_series"]:
            name, labels = parse_series(item["series"])
            if name in PROMETHEUS_SERIES:
                continue
            key = (name, frozenset((k, v) for k, v in labels.items() if k not in TARGET_LABELS))
            values = expand(item["values"])
            if key in fresh.values:
                offset = fresh.values[key]
                if _is_counter(name, fresh) and offset and values[0] != "_":
                    item["values"] = " ".join(_shift(v, offset) for v in values)
                    changed.append(f"{item['series']}: from {_number(offset)}")
                continue
            assert _is_counter(name, fresh), f"a fresh pod does not export {item['series']}"
            first = values[0]
            leading = next((i for i, v in enumerate(values) if v != first), len(values))
            if first != "_":
                item["values"] = " ".join(["_"] * leading + values[leading:])
                changed.append(f"{item['series']}: absent for the first {leading} steps")
    return changed
