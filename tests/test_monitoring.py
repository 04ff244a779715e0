"""Monitoring: the Prometheus config, the alert rules (promtool check and unit tests),
the Grafana dashboard, and every metric and label they name against a live /metrics
scrape of real api, sweeper and consumer processes."""

from __future__ import annotations

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

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import Role, role_env
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
ALERTS = CONFIG / "alerts.yml"
DASHBOARD = CONFIG / "grafana" / "dashboards" / "tracker.json"
PROMETHEUS_RULE = ROOT / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"
RECEIVER = ROOT / "docker" / "webhook_receiver.py"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

REQUIRED_ALERTS = {
    "TrackerBacklogGrowing",
    "TrackerOldestPendingTooOld",
    "TrackerShardNotSwept",
    "TrackerDeadLetters",
    "TrackerLatenessAboveObjective",
    "TrackerLeaderFlapping",
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
}
#: Grafana's variables, replaced by what they stand for before promtool parses a query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${job}": "tracker",
    "$job": "tracker",
}
#: Made by Prometheus, not by the tracker.
PROMETHEUS_SERIES = {"up"}
#: Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}
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


def test_every_alert_has_for_severity_summary_and_a_runbook() -> None:
    readme = re.sub(r"^```.*?^```", "", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", readme, re.MULTILINE)}
    rules = alert_rules()
    assert {r["alert"] for r in rules} == REQUIRED_ALERTS
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path == "README.md", rule["alert"]
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


# ---- a live scrape of real processes ----------------------------------------------------


@dataclass
class Scrape:
    series: dict[str, set[str]]  # sample name -> label names seen on it
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


def read_log(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def drive(base: str, receiver_log: Path, redis: RedisServer) -> Scrape:
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
        scrape = parse(http(f"{base}/metrics")[1].decode())
        return top >= set(unanswered) and refused and "timeout_dead_lettered_total" in scrape

    wait_for(delivered, 30, "every level delivered and a dead letter")
    redis.kill(signal.SIGTERM)  # the roles see Redis go away: timeout_redis_errors_total
    try:
        wait_for(
            lambda: "timeout_redis_errors_total" in parse(http(f"{base}/metrics")[1].decode()),
            20,
            "a Redis error counted",
        )
    finally:
        redis.start()
    wait_for(lambda: http(f"{base}/ready")[0] == 200, 30, "/ready after Redis came back")
    status, text = http(f"{base}/metrics")
    assert status == 200
    return Scrape(parse(text.decode()), read_log(receiver_log))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    """The api, a sweeper and a consumer as real processes on a Redis of their own,
    delivering to the compose stack's webhook receiver."""
    tmp = tmp_path_factory.mktemp("live")
    redis = RedisServer(tmp / "redis")
    redis.start()
    hook_port, port = free_port(), free_port()
    receiver_log = tmp / "receiver.log"
    env = role_env(
        redis.url, tmp / "run", PORT=str(port), POD_ID="scrape-pod", MODE="phase2",
        SHARD_COUNT="4", CONSUMER_PROCESSES="1", TIMEOUT_INTERVAL_MS="200",
        NOTIFY_SINK="webhook", NOTIFY_WEBHOOK_URL=f"http://127.0.0.1:{hook_port}/hook",
        NOTIFY_WEBHOOK_SECRET=SECRET, RETRY_BASE_MS="50",
    )  # fmt: skip
    with receiver_log.open("wb") as out:
        receiver = subprocess.Popen(
            [sys.executable, str(RECEIVER)],
            env={**os.environ, "PORT": str(hook_port), "WEBHOOK_SECRET": SECRET,
                 "REJECT_PREFIX": "undeliverable-"},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    roles: list[Role] = []
    try:
        roles.append(Role(["api"], env, tmp / "api.log"))
        roles.append(Role(["sweeper"], env, tmp / "sweeper.log"))
        roles.append(Role(["consumer", "--index", "0"], env, tmp / "consumer.log"))
        yield drive(f"http://127.0.0.1:{port}", receiver_log, redis)
    finally:
        for role in reversed(roles):
            role.stop()
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(timeout=10)
        redis.stop()
    for role in roles:
        assert "Traceback" not in role.output(), role.output()


@pytest.mark.slow
def test_every_metric_the_dashboard_and_alerts_name_is_exposed(live: Scrape) -> None:
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
def test_every_label_the_dashboard_and_alerts_use_is_exposed(live: Scrape) -> None:
    exprs = {f"alert {r['alert']}": r["expr"] for r in alert_rules()} | dashboard_queries()
    for where, expr in exprs.items():
        names = metric_names(expr) - PROMETHEUS_SERIES
        if not names:
            continue
        seen = set().union(*(live.series[n] for n in names)) | TARGET_LABELS
        assert label_names(expr) <= seen, f"{where}: {label_names(expr) - seen} not exposed"


@pytest.mark.slow
def test_webhook_receiver_verifies_and_logs_each_notification(live: Scrape) -> None:
    kinds = {entry["msg"] for entry in live.receiver_log}
    assert "rejected" not in kinds, "a signature did not verify"
    notifications = [e for e in live.receiver_log if e["msg"] == "notification"]
    assert {e["level"] for e in notifications} == {1, 2, 3}
    ids = [e["event_id"] for e in notifications]
    assert len(ids) == len(set(ids)), "the receiver logs each event id once"
    assert not {e["conversation_id"] for e in notifications} & {"conv-a", "conv-b"}
