"""Settings.from_env: defaults, good values, and one clear ConfigError per bad value."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tracker.errors import ConfigError
from tracker.settings import Settings
from tracker.state.layout import Layout

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, from the Standard Webhooks spec
WEBHOOK = {
    "NOTIFY_SINK": "webhook",
    "NOTIFY_WEBHOOK_URL": "https://hooks.example.test/tracker",
    "NOTIFY_WEBHOOK_SECRET": SECRET,
}


def settings(**env: str) -> Settings:
    return Settings.from_env({"POD_ID": "pod-1", **env})


def test_defaults() -> None:
    s = Settings.from_env({"RUN_DIR": "/srv/tracker"})
    assert s.redis_url == "unix:///srv/tracker/redis.sock"
    assert s.redis_mode == "standalone"
    assert s.mode == "phase2"
    assert s.port == 8080
    assert s.timeout_interval_ms == 30_000
    assert s.level_multipliers == (1.0, 2.0, 3.0)
    assert s.level_offsets_ms(30_000) == (30_000, 60_000, 90_000)
    assert s.leader_ttl_ms == 10_000
    assert s.check_interval_ms == 1000
    assert s.shard_count == 16
    assert s.notify_sinks == ("log",)
    assert s.api_tokens == ()
    assert s.run_dir == Path("/srv/tracker")
    assert s.metrics_dir == Path("/srv/tracker/metrics")
    assert s.pod_id
    assert s.prefetch_ms == 3000


def test_prefetch_defaults_below_a_quarter_of_the_delivery_timeout() -> None:
    """Held entries look idle: a short delivery timeout shortens the default prefetch,
    and a prefetch set explicitly too long for it is refused (BAD below)."""
    assert settings(DELIVERY_TIMEOUT_MS="2000").prefetch_ms == 500
    assert settings(PREFETCH_MS="0").prefetch_ms == 0


def test_good_values() -> None:
    s = settings(
        REDIS_URL="rediss://user:secret@redis.example.test:6380/2",
        MODE="phase1",
        PORT="9090",
        TIMEOUT_INTERVAL_MS=" 5000 ",
        LEVEL_MULTIPLIERS="1,1.5,4",
        LEADER_ELECTION_TTL="2.5",
        CHECK_INTERVAL_MS="250",
        SHARD_COUNT="64",
        CONSUMER_PROCESSES="4",
        API_TOKEN="token-a, token-b,,",
        NOTIFY_SINK="log,stream,log",
        NOTIFY_STREAM="outbound",
        MIN_TIMEOUT_MS="500",
        MAX_TIMEOUT_MS="500",
        PROMETHEUS_MULTIPROC_DIR="/tmp/prom",
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
    )
    assert s.redis_url == "rediss://user:secret@redis.example.test:6380/2"
    assert (s.mode, s.port, s.pod_id) == ("phase1", 9090, "pod-1")
    assert s.timeout_interval_ms == 5000
    assert s.level_offsets_ms(5000) == (5000, 7500, 20_000)
    assert s.leader_ttl_ms == 2500
    assert (s.check_interval_ms, s.shard_count, s.consumer_processes) == (250, 64, 4)
    assert s.api_tokens == ("token-a", "token-b")
    assert s.notify_sinks == ("log", "stream")
    assert s.notify_stream == "outbound"
    assert (s.min_timeout_ms, s.max_timeout_ms) == (500, 500)
    assert s.metrics_dir == Path("/tmp/prom")
    assert (s.log_format, s.log_level) == ("json", "DEBUG")


def test_webhook_sink() -> None:
    s = settings(**{**WEBHOOK, "NOTIFY_WEBHOOK_SECRET": f"{SECRET}, {SECRET[:-1]}Y"})
    assert s.notify_sinks == ("webhook",)
    assert s.webhook_url == WEBHOOK["NOTIFY_WEBHOOK_URL"]
    assert len(s.webhook_secrets) == 2


def test_empty_values_fall_back_to_defaults() -> None:
    s = settings(PORT="", SHARD_COUNT="  ", NOTIFY_SINK=" , ", MODE="")
    assert (s.port, s.shard_count, s.notify_sinks, s.mode) == (8080, 16, ("log",), "phase2")


def test_consumer_shares_cover_every_shard_once() -> None:
    layout = Layout(10)
    shares = [layout.shards_of_consumer(i, 3) for i in range(3)]
    assert sorted(n for share in shares for n in share) == list(range(10))
    during = Layout(8, previous=12, epoch=1)  # both layouts' shards while a reshard runs
    shares = [during.shards_of_consumer(i, 3) for i in range(3)]
    assert sorted(n for share in shares for n in share) == list(range(12))


BAD = [
    ("SHARD_COUNT", {"SHARD_COUNT": "zero"}),
    ("SHARD_COUNT", {"SHARD_COUNT": "0"}),
    ("SHARD_COUNT", {"SHARD_COUNT": "16384.5"}),
    ("PORT", {"PORT": "70000"}),
    ("PORT", {"PORT": "-1"}),
    ("TIMEOUT_INTERVAL_MS", {"TIMEOUT_INTERVAL_MS": "30s"}),
    ("TIMEOUT_INTERVAL_MS", {"TIMEOUT_INTERVAL_MS": "5"}),
    ("LEADER_ELECTION_TTL", {"LEADER_ELECTION_TTL": "ten"}),
    ("LEADER_ELECTION_TTL", {"LEADER_ELECTION_TTL": "0"}),
    ("LEADER_ELECTION_TTL", {"LEADER_ELECTION_TTL": "nan"}),
    ("CHECK_INTERVAL_MS", {"CHECK_INTERVAL_MS": "1e3"}),
    ("CONSUMER_PROCESSES", {"CONSUMER_PROCESSES": "0"}),
    ("API_PROCESSES", {"API_PROCESSES": "0"}),
    ("API_PROCESSES", {"API_PROCESSES": "two"}),
    ("MAX_DELIVERIES", {"MAX_DELIVERIES": "-5"}),
    ("MODE", {"MODE": "phase3"}),
    ("REDIS_MODE", {"REDIS_MODE": "replica"}),
    ("REDIS_URL", {"REDIS_URL": "http://localhost:6379"}),
    ("REDIS_URL", {"REDIS_URL": "localhost:6379"}),
    ("LEVEL_MULTIPLIERS", {"LEVEL_MULTIPLIERS": "1,2"}),
    ("LEVEL_MULTIPLIERS", {"LEVEL_MULTIPLIERS": "3,2,1"}),
    ("LEVEL_MULTIPLIERS", {"LEVEL_MULTIPLIERS": "0,1,2"}),
    ("LEVEL_MULTIPLIERS", {"LEVEL_MULTIPLIERS": "1,two,3"}),
    ("LEVEL_MULTIPLIERS", {"LEVEL_MULTIPLIERS": "1,2,inf"}),
    ("LEVEL_MULTIPLIERS", {"LEVEL_MULTIPLIERS": "1,2,nan"}),
    ("NOTIFY_SINK", {"NOTIFY_SINK": "log,email"}),
    ("NOTIFY_WEBHOOK_URL", {"NOTIFY_SINK": "webhook", "NOTIFY_WEBHOOK_SECRET": SECRET}),
    ("NOTIFY_WEBHOOK_URL", {**WEBHOOK, "NOTIFY_WEBHOOK_URL": "ftp://hooks.example.test/"}),
    ("NOTIFY_WEBHOOK_SECRET", {**WEBHOOK, "NOTIFY_WEBHOOK_SECRET": ""}),
    ("NOTIFY_WEBHOOK_SECRET", {**WEBHOOK, "NOTIFY_WEBHOOK_SECRET": "whsec_c2hvcnQ="}),
    ("NOTIFY_STREAM", {"NOTIFY_STREAM": "out {1}"}),
    ("POD_ID", {"POD_ID": "pod 1"}),
    ("POD_ID", {"POD_ID": "pod|1"}),
    ("POD_ID", {"POD_ID": "pod{1}"}),
    ("POD_ID", {"POD_ID": "p" * 129}),
    ("MIN_TIMEOUT_MS", {"MIN_TIMEOUT_MS": "5000", "MAX_TIMEOUT_MS": "4000"}),
    ("MAX_TIMEOUT_MS", {"MAX_TIMEOUT_MS": "forever"}),
    ("ANSWERED_RETENTION_MS", {"ANSWERED_RETENTION_MS": "10"}),
    ("LOG_LEVEL", {"LOG_LEVEL": "verbose"}),
    ("LOG_FORMAT", {"LOG_FORMAT": "xml"}),
    ("PREFETCH_MS", {"PREFETCH_MS": "-1"}),
    ("PREFETCH_MS", {"PREFETCH_MS": "2000", "DELIVERY_TIMEOUT_MS": "4000"}),
]


@pytest.mark.parametrize(("variable", "env"), BAD, ids=[f"{v}={e.get(v, '')[:20]}" for v, e in BAD])
def test_bad_value_raises_config_error_naming_the_variable(
    variable: str, env: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**env)
    message = str(info.value)
    assert message.startswith(f"{variable}:")
    assert "\n" not in message


def test_bad_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RUN_DIR")}
    env.update(SHARD_COUNT="zero", RUN_DIR=str(tmp_path / "run"))
    done = subprocess.run(
        [sys.executable, "-m", "tracker", "api"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "SHARD_COUNT" in lines[0]
    assert "zero" in lines[0]
    assert done.stdout == ""
    assert not (tmp_path / "run").exists()


# -- secrets from files, TLS CA, HTTP timeouts ---------------------------------------------


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    """API_TOKEN_FILE, REDIS_URL_FILE, NOTIFY_WEBHOOK_SECRET_FILE, as Kubernetes and Docker
    mount secrets: the file's text, white space around it dropped (a trailing newline)."""
    (tmp_path / "token").write_text("token-a,token-b\n")
    (tmp_path / "url").write_text("redis://user:pw@redis.example.test:6380/2\n")
    (tmp_path / "secret").write_text(f"{SECRET}\n")
    s = settings(
        API_TOKEN_FILE=str(tmp_path / "token"),
        REDIS_URL_FILE=str(tmp_path / "url"),
        NOTIFY_WEBHOOK_SECRET_FILE=str(tmp_path / "secret"),
        NOTIFY_SINK="webhook",
        NOTIFY_WEBHOOK_URL=WEBHOOK["NOTIFY_WEBHOOK_URL"],
    )
    assert s.api_tokens == ("token-a", "token-b")
    assert s.redis_url == "redis://user:pw@redis.example.test:6380/2"
    assert not s.redis_embedded
    assert s.webhook_secrets == (SECRET,)


def test_the_pod_passes_a_redis_url_file_on_and_starts_no_redis(tmp_path: Path) -> None:
    """With REDIS_URL_FILE the roles read the file themselves: the pod puts no REDIS_URL
    (the secret, and a second way of giving it) in their environment."""
    from tracker.pod.supervisor import pod_environment

    (tmp_path / "url").write_text("redis://redis.example.test:6379/0")
    env = {"POD_ID": "p", "RUN_DIR": str(tmp_path / "run"), "REDIS_URL_FILE": str(tmp_path / "url")}
    out = pod_environment(Settings.from_env(env), env)
    assert "REDIS_URL" not in out
    assert out["POD_REDIS_PROCESSES"] == "0"
    Settings.from_env(out)  # what each role reads back is valid


def test_unset_api_token_means_no_auth_and_a_blank_redis_url_the_embedded_one() -> None:
    assert settings().api_tokens == ()
    assert settings(REDIS_URL=" ").redis_embedded


def test_http_timeouts_and_access_log() -> None:
    s = settings(HTTP_IDLE_TIMEOUT_MS="5000", HTTP_BODY_TIMEOUT_MS="2000", ACCESS_LOG="yes")
    assert (s.http_idle_timeout_ms, s.http_body_timeout_ms, s.access_log) == (5000, 2000, True)
    assert not settings(ACCESS_LOG="0").access_log
    assert not settings().access_log


def test_redis_tls_ca_file_takes_a_pem_bundle_with_rediss(tmp_path: Path) -> None:
    from tests.test_security import make_certificates

    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed (it makes the test certificate)")
    make_certificates(tmp_path)
    s = settings(REDIS_URL="rediss://127.0.0.1:6380/0", REDIS_TLS_CA_FILE=str(tmp_path / "ca.crt"))
    assert s.redis_tls_ca_file == tmp_path / "ca.crt"
