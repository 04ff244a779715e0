"""Monitoring: the Prometheus config, the alert rules (promtool check and unit tests),
the Grafana dashboard, and every metric and label they name against a live /metrics
scrape of real api, sweeper and consumer processes."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import promseries
from tests.support.processes import Pod
from tests.support.redis_server import RedisServer, free_port
from tracker import metrics
from tracker.redis.connection import ERROR_KINDS
from tracker.settings import SINKS

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
ALERTS = CONFIG / "alerts.yml"
DASHBOARD = CONFIG / "grafana" / "dashboards" / "tracker.json"
PROMETHEUS_RULE = ROOT / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"
RECEIVER = ROOT / "docker" / "webhook_receiver.py"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SHARDS = 4
COMMIT = "c0ffee1"
RUNBOOK_BASE_URL = next(
    line.partition("=")[2]
    for line in (ROOT / "k8s" / "base" / "config.env").read_text().splitlines()
    if line.startswith("RUNBOOK_BASE_URL=")
)

REQUIRED_ALERTS = {
    "TrackerBacklogGrowing",
    "TrackerOldestPendingTooOld",
    "TrackerShardNotSwept",
    "TrackerDeadLetters",
    "TrackerDeadLettersWaiting",
    "TrackerLatenessAboveObjective",
    "TrackerLeaderFlapping",
    "TrackerRedisErrors",
    "TrackerApiUnavailable",
    "TrackerApiServerErrors",
    "TrackerProcessRestarting",
    "TrackerTargetDown",
}
REQUIRED_PANELS = {
    "Waiting conversations",
    "Notifications by level",
    "Firing lateness p50 / p99",
    "Customer response time",
    "Backlog and pending",
    "Leases per pod",
    "Leader changes",
    "Request rate",
    "Errors",
    "Latency p50 / p99",
    "Memory by program",
    "CPU by program",
    "In-pod restarts",
}
#: Grafana's variables, replaced by what they stand for before promtool parses a query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${job}": "tracker",
    "$job": "tracker",
}
PROMETHEUS_SERIES = promseries.PROMETHEUS_SERIES
TARGET_LABELS = promseries.TARGET_LABELS
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def promtool(*args: str, cwd: Path = CONFIG) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: `make test` installs it (Debian package prometheus)")
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# ---- PromQL in the rules and the dashboard ----------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return [p for p in out if p["type"] != "row"]


def substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def dashboard_queries() -> dict[str, str]:
    """Every PromQL query of the dashboard, keyed by where it is, variables substituted."""
    return {
        f"panel {panel['id']} ({panel['title']}) {target['refId']}": substitute(target["expr"])
        for panel in panels()
        for target in panel["targets"]
    }


def variable_metrics() -> set[str]:
    """Metrics the dashboard's template variables query (label_values(metric, label))."""
    out = set()
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert found, variable["definition"]
            out.add(found[1])
    return out


def _strip(expr: str) -> str:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    return re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (functions and keywords left out)."""
    names = set()
    for found in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", _strip(expr)):
        if found[2] is None and found[1].lower() not in PROMQL_WORDS:
            names.add(found[1])
    return names


def label_names(expr: str) -> set[str]:
    """Labels an expression groups by or matches on."""
    labels: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels.update(x.strip() for x in group.split(",") if x.strip())
    for matchers in re.findall(r"\{([^}]*)\}", re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)):
        labels.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    return labels


def test_metric_names_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(http_x_bucket{job="a", s=~"5.."}'
        '[5m]))) > 2.5 and on() absent(up{job="t"}) or vector(1e3) unless time() - y_total'
    )
    assert metric_names(expr) == {"http_x_bucket", "up", "y_total"}
    assert label_names(expr) == {"le", "route", "job", "s"}


# ---- Prometheus and the alert rules -----------------------------------------------------


def test_prometheus_config_is_valid() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_are_valid() -> None:
    done = promtool("check", "rules", ALERTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_unit_tests_pass() -> None:
    done = promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_runbook_base_url_is_absolute() -> None:
    url = urlsplit(RUNBOOK_BASE_URL)
    assert url.scheme == "https", RUNBOOK_BASE_URL
    assert url.netloc, RUNBOOK_BASE_URL
    assert not url.fragment, RUNBOOK_BASE_URL


def test_every_alert_keeps_namespace_and_job_apart() -> None:
    """Two deployments in one Prometheus must not merge: every aggregation keeps both."""
    for rule in alert_rules():
        for grouping in re.findall(r"\b(?:sum|max|min|count|avg) by \(([^)]*)\)", rule["expr"]):
            labels = {x.strip() for x in grouping.split(",")}
            assert {"namespace", "job"} <= labels, f"{rule['alert']}: by ({grouping})"
        assert " without " not in rule["expr"], rule["alert"]
        aggregated = re.findall(r"\b(sum|max|min|count|avg)\s*\(", rule["expr"])
        assert not aggregated, f"{rule['alert']}: {aggregated} without `by`"


def test_every_alert_has_for_severity_summary_and_a_runbook() -> None:
    readme = re.sub(r"^```.*?^```", "", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", readme, re.MULTILINE)}
    rules = alert_rules()
    assert {r["alert"] for r in rules} == REQUIRED_ALERTS
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base == RUNBOOK_BASE_URL, rule["alert"]  # kustomize replaces it: see test_deploy
        assert anchor.startswith("runbook-"), rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: README has no section #{anchor}"


def test_every_alert_has_a_firing_unit_test() -> None:
    tests = yaml.safe_load((CONFIG / "alerts.test.yml").read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert firing == REQUIRED_ALERTS


def test_prometheus_rule_carries_the_same_alerts() -> None:
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text()), (
        "k8s/components/monitoring/prometheusrule.yaml differs from config/alerts.yml:"
        " copy the groups of config/alerts.yml under its spec"
    )


# ---- the dashboard ----------------------------------------------------------------------


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard_query_{i}", "expr": expr, "labels": {"where": where}}
        for i, (where, expr) in enumerate(sorted(dashboard_queries().items()))
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_has_the_panels_an_operator_needs() -> None:
    titles = {p["title"] for p in panels()}
    assert titles >= REQUIRED_PANELS, REQUIRED_PANELS - titles
    heatmap = next(p for p in panels() if p["title"] == "Customer response time")
    assert heatmap["type"] == "heatmap"
    assert "customer_response_time_seconds_bucket" in heatmap["targets"][0]["expr"]


def test_dashboard_panels_use_the_datasource_variable_and_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    ids = set()
    for panel in dashboard()["panels"]:
        ids.add(panel["id"])
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
    assert len(ids) == len(dashboard()["panels"])


def test_alerts_and_dashboard_select_the_tracker_job() -> None:
    """Names like http_requests_total are common: every selector keeps to job="tracker"."""
    exprs = {f"alert {r['alert']}": r["expr"] for r in alert_rules()} | dashboard_queries()
    for where, expr in exprs.items():
        for name in metric_names(expr):
            pattern = rf"(?<![\w:]){re.escape(name)}(?![\w:])(\s*\{{[^}}]*\}})?"
            for found in re.finditer(pattern, expr):
                assert 'job="tracker"' in (found[1] or ""), f"{where}: {name} without the job"


# ---- a real pod, scraped from its start ------------------------------------------------


@dataclass
class Live:
    """One pod (supervisord and every program) on a Redis of its own, delivering to the
    compose stack's webhook receiver: its very first scrape, and one after traffic that
    makes every labelled metric appear."""

    pod: Pod
    fresh: str  # the text of the first /metrics that answered
    series: dict[str, set[str]]  # after the traffic: sample name -> label names seen on it
    receiver_log: list[dict[str, Any]]


def http(url: str, body: Any = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


def parse(text: str) -> dict[str, set[str]]:
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {
        frozenset(s.labels.items()): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def scrape(base: str) -> str:
    status, body = http(f"{base}/metrics")
    assert status == 200, body
    return body.decode()


def first_scrape(base: str, timeout: float = 60) -> str:
    """The first /metrics that answers, as Prometheus would take it from a new pod."""
    found: list[bytes] = []

    def answered() -> bool:
        status, body = http(f"{base}/metrics")
        if status == 200:
            found.append(body)
        return bool(found)

    wait_for(answered, timeout, "a first /metrics")
    return found[0].decode()


def read_log(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def drive(base: str, receiver_log: Path, redis: RedisServer) -> str:
    """Traffic that makes every labelled metric appear, then one scrape of the pod."""
    wait_for(lambda: http(f"{base}/ready")[0] == 200, 30, "/ready")
    unanswered = [f"conv-{i}" for i in range(4)]
    answered = ["conv-a", "conv-b"]
    for conversation in [*unanswered, *answered, "undeliverable-1"]:
        status, body = http(
            f"{base}/conversations/{conversation}/agent-message",
            {"agent_id": "agent-1", "message_id": f"m-{conversation}"},
        )
        assert status == 200, body
    for conversation in answered:
        status, body = http(
            f"{base}/conversations/{conversation}/customer-response",
            {"customer_id": "cust-1", "message_id": f"r-{conversation}"},
        )
        assert status == 200, body
    assert http(f"{base}/conversations/never-seen")[0] == 404

    def delivered() -> bool:
        log = read_log(receiver_log)
        top = {e["conversation_id"] for e in log if e["msg"] == "notification" and e["level"] == 3}
        refused = any(e["msg"] == "refused" for e in log)
        dead = samples(scrape(base), "timeout_dead_lettered_total")
        return top >= set(unanswered) and refused and sum(dead.values()) > 0

    wait_for(delivered, 30, "every level delivered and a dead letter")
    redis.kill(signal.SIGTERM)  # the roles see Redis go away: timeout_redis_errors_total
    try:
        wait_for(
            lambda: sum(samples(scrape(base), "timeout_redis_errors_total").values()) > 0,
            20,
            "a Redis error counted",
        )
    finally:
        redis.start()
    wait_for(lambda: http(f"{base}/ready")[0] == 200, 30, "/ready after Redis came back")
    return scrape(base)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("live")
    redis = RedisServer(tmp / "redis")
    redis.start()
    hook_port = free_port()
    receiver_log = tmp / "receiver.log"
    with receiver_log.open("wb") as out:
        receiver = subprocess.Popen(
            [sys.executable, str(RECEIVER)],
            env={**os.environ, "PORT": str(hook_port), "WEBHOOK_SECRET": SECRET,
                 "REJECT_PREFIX": "undeliverable-"},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    pod = Pod(
        "scrape-pod", redis.url, tmp, MODE="phase2", SHARD_COUNT=str(SHARDS),
        CONSUMER_PROCESSES="1", TIMEOUT_INTERVAL_MS="200", NOTIFY_SINK="webhook",
        NOTIFY_WEBHOOK_URL=f"http://127.0.0.1:{hook_port}/hook", NOTIFY_WEBHOOK_SECRET=SECRET,
        RETRY_BASE_MS="50", TRACKER_COMMIT=COMMIT,
    )  # fmt: skip
    try:
        fresh = first_scrape(pod.base)
        after = drive(pod.base, receiver_log, redis)
        yield Live(pod, fresh, parse(after), read_log(receiver_log))
    finally:
        pod.stop()
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(timeout=10)
        redis.stop()
    assert "Traceback" not in pod.role.output(), pod.role.output()[-3000:]


@pytest.mark.slow
def test_every_known_label_set_is_exported_at_0_from_the_first_scrape(live: Live) -> None:
    """A counter that appears with its first event hides that event from increase():
    every label set known in advance is in the pod's very first scrape, at 0."""
    expected = {
        "timeout_notifications_sent_total": [{"level": v} for v in metrics.LEVELS],
        "timeout_dead_lettered_total": [{"reason": r} for r in metrics.DEAD_LETTER_REASONS],
        "timeout_notifications_suppressed_total": [{"reason": r} for r in metrics.SUPPRESS_REASONS],
        "timeout_deliveries_failed_total": [{"sink": s} for s in SINKS],
        "timeout_leader_changes_total": [{"change": c} for c in ("gained", "lost")],
        "timeout_redis_errors_total": [
            {"role": r, "kind": k} for r in ("sweeper", "consumer") for k in ERROR_KINDS
        ],
        "tracker_process_restarts_total": [{"program": p} for p in ("api", "sweeper", "consumer")],
    }
    assert {"permanent", "max_deliveries", "malformed", "unexpected"} <= set(
        metrics.DEAD_LETTER_REASONS
    )
    assert {"stale", "duplicate", "superseded"} <= set(metrics.SUPPRESS_REASONS)
    for name, label_sets in expected.items():
        found = samples(live.fresh, name)
        for labels in label_sets:
            value = found.get(frozenset(labels.items()))
            assert value is not None, f"{name}{labels} not in the first scrape"
            if name != "timeout_leader_changes_total":  # the sweeper may have taken leases
                assert value == 0, f"{name}{labels} = {value} before any traffic"


@pytest.mark.slow
def test_alert_unit_tests_pass_from_a_real_scrape_of_a_fresh_pod(
    live: Live, tmp_path: Path
) -> None:
    """alerts.test.yml as Prometheus would see it from a real pod: each series checked
    against the fresh pod's first scrape (name and labels exported, a counter's start at
    its value), a counter the pod does not export yet made absent until its first event;
    every alert still fires and stays quiet where the tests say."""
    tests = yaml.safe_load((CONFIG / "alerts.test.yml").read_text())
    changed = promseries.from_scrape(tests["tests"], promseries.Fresh.parse(live.fresh))
    tests["rule_files"] = [str(ALERTS)]
    path = tmp_path / "alerts.test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = promtool("test", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, "\n".join(changed) + "\n" + done.stdout + done.stderr
    # Only series whose label values come with traffic (a route's first request) start later.
    late = [line for line in changed if "absent" in line]
    assert all(line.startswith("http_requests_total{") for line in late), late


@pytest.mark.slow
def test_every_metric_the_dashboard_and_alerts_name_is_exposed(live: Live) -> None:
    named = {f"alert {rule['alert']}": metric_names(rule["expr"]) for rule in alert_rules()} | {
        where: metric_names(expr) for where, expr in dashboard_queries().items()
    }
    named["template variables"] = variable_metrics()
    missing = {
        where: sorted(names - PROMETHEUS_SERIES - set(live.series))
        for where, names in named.items()
        if names - PROMETHEUS_SERIES - set(live.series)
    }
    assert not missing, f"not in a live /metrics scrape: {missing}"


@pytest.mark.slow
def test_every_label_the_dashboard_and_alerts_use_is_exposed(live: Live) -> None:
    exprs = {f"alert {r['alert']}": r["expr"] for r in alert_rules()} | dashboard_queries()
    for where, expr in exprs.items():
        names = metric_names(expr) - PROMETHEUS_SERIES
        if not names:
            continue
        seen = set().union(*(live.series[n] for n in names)) | TARGET_LABELS
        assert label_names(expr) <= seen, f"{where}: {label_names(expr) - seen} not exposed"


@pytest.mark.slow
def test_webhook_receiver_verifies_and_logs_each_notification(live: Live) -> None:
    kinds = {entry["msg"] for entry in live.receiver_log}
    assert "rejected" not in kinds, "a signature did not verify"
    notifications = [e for e in live.receiver_log if e["msg"] == "notification"]
    assert {e["level"] for e in notifications} == {1, 2, 3}
    ids = [e["event_id"] for e in notifications]
    assert len(ids) == len(set(ids)), "the receiver logs each event id once"
    assert not {e["conversation_id"] for e in notifications} & {"conv-a", "conv-b"}


@pytest.mark.slow
def test_every_process_of_the_pod_and_the_build_are_in_the_metrics(live: Live) -> None:
    text = scrape(live.pod.base)
    processes = {
        "supervisord": "supervisord", "api-0": "api", "sweeper": "sweeper",
        "consumer-0": "consumer", "metrics-listener": "metrics-listener",
        "fatal-listener": "fatal-listener",
    }  # fmt: skip
    now = time.time()
    families = ("resident_memory_bytes", "open_fds", "start_time_seconds", "cpu_seconds_total")
    for family in families:
        found = samples(text, f"tracker_process_{family}")
        for process, program in processes.items():
            value = found.get(frozenset({"program": program, "process": process}.items()))
            assert value is not None, f"tracker_process_{family} of {process}"
            if family == "start_time_seconds":
                assert now - 600 < value <= now, (process, value)
            elif family != "cpu_seconds_total":
                assert value > 0, (family, process)
    pid = live.pod.pid_of("sweeper")
    rss = samples(text, "tracker_process_resident_memory_bytes")[
        frozenset({"program": "sweeper", "process": "sweeper"}.items())
    ]
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    assert abs(rss - pages * os.sysconf("SC_PAGE_SIZE")) < 16 * 1024 * 1024  # moments apart
    version = importlib.metadata.version("tracker")
    assert samples(text, "tracker_build_info") == {
        frozenset({"version": version, "commit": COMMIT}.items()): 1
    }


@pytest.mark.slow
def test_a_crashing_consumer_counts_as_an_in_pod_restart(live: Live) -> None:
    """supervisord restarts a killed consumer itself (Kubernetes sees nothing): the
    metrics listener counts it."""

    def restarts() -> dict[str, float]:
        found = samples(scrape(live.pod.base), "tracker_process_restarts_total")
        return {dict(labels)["program"]: value for labels, value in found.items()}

    before = restarts()
    pid = live.pod.pid_of("consumer:consumer-0")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: restarts()["consumer"] == before["consumer"] + 1, 20, "the restart counted")
    wait_for(lambda: live.pod.pid_of("consumer:consumer-0") not in (0, pid), 20, "restarted")
    assert restarts()["sweeper"] == before["sweeper"]


@pytest.mark.slow
def test_a_shrink_removes_the_series_of_the_shards_that_are_gone(
    redis_server: RedisServer, redis_sync: object, tmp_path: Path
) -> None:
    """8 -> 4 shards on a live pod: timeout_last_sweep_timestamp_seconds keeps shards 0-3
    (swept) and has none of 4-7, so TrackerShardNotSwept has nothing to fire on."""
    pod = Pod("shrink", redis_server.url, tmp_path, SHARD_COUNT="8", CONSUMER_PROCESSES="1")
    try:
        wait_for(lambda: http(f"{pod.base}/ready")[0] == 200, 30, "/ready")

        def shards() -> dict[str, float]:
            found = samples(scrape(pod.base), "timeout_last_sweep_timestamp_seconds")
            return {dict(labels)["shard"]: value for labels, value in found.items()}

        wait_for(lambda: set(shards()) == {str(s) for s in range(8)}, 10, "8 shards exported")
        command = [sys.executable, "-m", "tracker", "reshard", "--to", "4", "--drain-timeout", "60"]
        done = subprocess.run(
            command, env={**os.environ, **pod.env}, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for(lambda: set(shards()) == {"0", "1", "2", "3"}, 10, "only shards 0-3 exported")
        now = time.time()
        wait_for(lambda: all(now - 5 < t for t in shards().values()), 10, "every shard swept")
    finally:
        pod.stop()
    assert "Traceback" not in pod.role.output(), pod.role.output()[-3000:]
