"""Security end to end: API tokens with rotation, Standard Webhooks signatures checked by
an independent implementation (the ``standardwebhooks`` package) during a secret
rotation, the whole pod as the ACL user of config/redis-acl.conf, and rediss:// (TLS)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as sync_redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.faults import agent, every_level
from tests.support.load import pod_with_receiver
from tests.support.processes import Role, post_events, role_env, running
from tests.support.receiver import Receiver
from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import wait_http, wait_until
from tracker.redis.keys import LAYOUT

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# the pod run as the ACL user: both sinks, so the outbound stream's key pattern is used too
ACL_POD = {"SHARD_COUNT": "4", "TIMEOUT_INTERVAL_MS": "300", "NOTIFY_SINK": "webhook,stream"}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


# -- API tokens ---------------------------------------------------------------------------


async def test_api_tokens_rotate_and_health_and_metrics_stay_open(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    """API_TOKEN="old,new": both tokens work during a rotation, anything else gets 401 with
    a JSON error and changes nothing; /health, /ready, /metrics, /openapi.json need none."""
    port = free_port()
    old, new = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    env = role_env(
        redis_server.url, tmp_path / "run", PORT=str(port), POD_ID="auth", API_TOKEN=f"{old},{new}"
    )
    api = Role(["api"], env, tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    body = {"agent_id": "agent-1", "message_id": "m-1"}
    try:
        await wait_http(f"{base}/health")
        async with aiohttp.ClientSession() as s:
            for path in ("/health", "/ready", "/metrics", "/openapi.json"):
                async with s.get(f"{base}{path}") as resp:
                    assert resp.status == 200, path
            refused = [
                {},
                {"Authorization": "Bearer"},
                {"Authorization": "Bearer wrong"},
                {"Authorization": f"Bearer {old[:-1]}"},  # a prefix of a valid token
                {"Authorization": f"Bearer {old}x"},
                {"Authorization": f"Basic {old}"},
                {"Authorization": f"Bearer {old},{new}"},
            ]
            for headers in refused:
                async with s.post(
                    f"{base}/conversations/c-refused/agent-message", json=body, headers=headers
                ) as resp:
                    assert resp.status == 401, headers
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                    assert (await resp.json())["error"]["code"] == "unauthorized"
                async with s.get(f"{base}/conversations/c-1", headers=headers) as resp:
                    assert resp.status == 401
            assert redis_sync.keys("conversations:*") == []
            for n, token in enumerate((old, new)):
                headers = {"Authorization": f"Bearer {token}"}
                async with s.post(
                    f"{base}/conversations/c-{n}/agent-message", json=body, headers=headers
                ) as resp:
                    assert resp.status == 200
                async with s.get(f"{base}/conversations/c-{n}", headers=headers) as resp:
                    assert resp.status == 200
    finally:
        api.stop()
    assert "Traceback" not in api.output()


# -- webhook signatures -------------------------------------------------------------------


async def test_webhook_signatures_verify_with_the_standard_webhooks_library_during_rotation(
    redis_server: RedisServer, redis_sync: sync_redis.Redis, tmp_path: Path
) -> None:
    """NOTIFY_WEBHOOK_SECRET="new,old": each request carries webhook-id (= event_id),
    webhook-timestamp and one v1 signature per secret. The standardwebhooks package
    verifies every request with either secret alone, and rejects a third secret, a changed
    body, a changed id and a stale timestamp."""
    old, new, other = new_secret(), new_secret(), new_secret()
    receiver = Receiver(secret=old)  # a receiver that has not rotated yet
    settings = {
        "POD_ID": "sign",
        "MODE": "phase1",
        "TIMEOUT_INTERVAL_MS": "300",
        "NOTIFY_WEBHOOK_SECRET": f"{new},{old}",
    }
    roles = ["api", "sweeper"]
    async with running(redis_server.url, tmp_path, roles, receiver=receiver, env=settings) as stack:
        ids = [f"sig-{i}" for i in range(10)]
        await post_events(stack.base, [agent(c) for c in ids])
        await wait_until(lambda: len(receiver.events) >= 30, timeout=15)
    assert receiver.bad_signatures == 0
    for r in receiver.events:
        headers = {k.lower(): v for k, v in r.headers.items()}
        assert headers["webhook-id"] == r.event["event_id"]
        assert abs(int(headers["webhook-timestamp"]) - r.received_ms / 1000) < 5
        assert [s[:3] for s in headers["webhook-signature"].split()] == ["v1,", "v1,"]
        for secret in (old, new):
            assert Webhook(secret).verify(r.body, headers) == r.event
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(r.body, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(new).verify(r.body.replace(b'"level":', b'"level": '), headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(new).verify(r.body, {**headers, "webhook-id": "evt_other"})
        stale = {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}
        with pytest.raises(WebhookVerificationError):
            Webhook(new).verify(r.body, stale)
    assert {(r.event["conversation_id"], r.event["level"]) for r in receiver.events} == (
        every_level(ids)
    )


# -- an ACL user ----------------------------------------------------------------------------


@contextlib.contextmanager
def redis_process(
    workdir: Path, *args: str, config: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server with extra arguments (after its `config` file, if any), stopped by its
    pid at the end."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    workdir.mkdir(parents=True, exist_ok=True)
    first = [str(config)] if config is not None else []
    with (workdir / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen(
            [binary, *first, "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
             "--logfile", str(workdir / "redis.log"), *args],
            stdout=stderr,
            stderr=stderr,
        )  # fmt: skip
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(client: sync_redis.Redis, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        with contextlib.suppress(sync_redis.ConnectionError):
            if client.ping():
                return
        time.sleep(0.05)
    raise AssertionError("redis-server did not start")


REFUSED: list[tuple[Any, ...]] = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("CONFIG", "GET", "*"),
    ("CONFIG", "SET", "appendonly", "no"),
    ("SCRIPT", "FLUSH"),
    ("ACL", "LIST"),
    ("CLIENT", "KILL", "ID", "1"),
    ("SHUTDOWN", "NOSAVE"),
    ("MIGRATE", "127.0.0.1", "1", "x", "0", "1"),
    ("GET", "sessions:1"),  # a key outside the tracker's patterns
    ("SET", "sessions:1", "x"),
    ("DEL", "users"),
    ("EVAL", "return redis.call('FLUSHALL')", "0"),  # scripts run with the caller's rights
    ("EVAL", "return redis.call('GET', KEYS[1])", "1", "sessions:1"),
    ("PUBLISH", "other-channel", "x"),
]


async def test_the_pod_runs_as_the_acl_user_and_nothing_else_is_allowed(tmp_path: Path) -> None:
    """config/redis-acl.conf as it ships (password filled in): a whole pod runs as user
    ``tracker`` with the webhook and stream sinks and delivers every level, the operator
    CLI works (a live reshard included), and commands and keys outside the file are refused
    with NOPERM."""
    password = secrets.token_urlsafe(18)
    admin_password = secrets.token_urlsafe(18)
    digest = hashlib.sha256(password.encode()).hexdigest()
    shipped = (ROOT / "config" / "redis-acl.conf").read_text()
    assert "REPLACE_WITH_SHA256_OF_THE_TRACKER_PASSWORD" in shipped
    acl = tmp_path / "users.acl"
    acl.write_text(
        shipped.replace("REPLACE_WITH_SHA256_OF_THE_TRACKER_PASSWORD", digest)
        + f"user admin on >{admin_password} ~* &* +@all\n"
    )
    port = free_port()
    workdir = tmp_path / "redis"
    with redis_process(workdir, "--port", str(port), "--aclfile", str(acl)) as proc:
        admin = sync_redis.Redis(
            port=port, username="admin", password=admin_password, decode_responses=True
        )
        wait_for(admin, proc, workdir / "redis.log")
        url = f"redis://tracker:{password}@127.0.0.1:{port}/0"
        tracker = sync_redis.Redis.from_url(url, decode_responses=True)
        with pytest.raises(sync_redis.AuthenticationError):
            sync_redis.Redis(port=port, decode_responses=True).ping()  # default user is off
        for command in REFUSED:
            with pytest.raises(
                sync_redis.ResponseError,
                match=r"NOPERM|no permissions|can.t run this command|No permissions",
            ):
                tracker.execute_command(*command)  # type: ignore[no-untyped-call]

        async with pod_with_receiver(url, tmp_path, name="pod-acl", **ACL_POD) as (pod, receiver):
            ids = [f"acl-{i}" for i in range(30)]
            await post_events(pod.base, [agent(c) for c in ids])
            expected = every_level(ids)
            await wait_until(
                lambda: (
                    {(r.event["conversation_id"], r.event["level"]) for r in receiver.events}
                    >= expected
                ),
                timeout=20,
            )
            await wait_until(lambda: admin.xlen("timeout_notifications") >= 90, 10)
            clis = (
                ["status"],
                ["dead-letters", "list"],
                ["conversation", "acl-1"],
                ["reshard", "--to", "8"],  # the pod's 4 shards to 8, as the tracker user too
                ["conversation", "acl-1"],
            )
            for cli in clis:
                cli_proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tracker",
                    *cli,
                    env={**os.environ, **pod.env},
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                output, _ = await asyncio.wait_for(cli_proc.communicate(), 60)
                assert cli_proc.returncode == 0, (cli, output.decode())
            assert admin.hget(LAYOUT, "count") == "8"
            await asyncio.sleep(1.0)  # a maintenance pass (trim, gauges) has run meanwhile
        log = pod.role.output()
        assert "NOPERM" not in log, log[log.find("NOPERM") - 2000 :]
        assert "Traceback" not in log, log[-3000:]
        admin.close()
        tracker.close()


# -- TLS --------------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=tracker test CA", cwd=directory)  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=directory)  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
            cwd=directory)  # fmt: skip


def tls_unsupported(workdir: Path) -> bool:
    """Did redis-server refuse the TLS options (a build without TLS)?"""
    text = (workdir / "stderr.log").read_text(errors="replace")
    return "tls" in text.lower() and ("Bad directive" in text or "not supported" in text)


async def test_rediss_tls_connections_work(tmp_path: Path) -> None:
    """A redis-server serving only TLS (self-signed CA): the API and a sweeper reach it with
    REDIS_URL=rediss://... and REDIS_TLS_CA_FILE, notifications flow; a client that does not
    trust the CA is refused, and there is no plain-text port."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed (it makes the test certificate)")
    certs = tmp_path / "certs"
    make_certificates(certs)
    port = free_port()
    tls = [
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(certs / "server.crt"),
        "--tls-key-file", str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.crt"),
        "--tls-auth-clients", "no",
    ]  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0"
    workdir = tmp_path / "redis"
    with redis_process(workdir, *tls) as proc:
        client = sync_redis.Redis.from_url(
            url, decode_responses=True, ssl_ca_certs=str(certs / "ca.crt")
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        if proc.poll() is not None and tls_unsupported(workdir):
            pytest.skip("this redis-server was built without TLS support (BUILD_TLS=no)")
        wait_for(client, proc, workdir / "redis.log")
        with pytest.raises(sync_redis.ConnectionError):
            sync_redis.Redis.from_url(f"rediss://127.0.0.1:{port}/0").ping()  # CA not trusted
        with pytest.raises(sync_redis.ConnectionError):
            sync_redis.Redis(port=port, socket_timeout=2).ping()  # plain text on the TLS port

        settings = {
            "POD_ID": "tls",
            "MODE": "phase1",
            "TIMEOUT_INTERVAL_MS": "300",
            "LEVEL_MULTIPLIERS": "1,5,9",  # spaced: a late sweep on a busy machine skips none
            "REDIS_TLS_CA_FILE": str(certs / "ca.crt"),
        }
        receiver = Receiver()
        roles = ["api", "sweeper"]
        try:
            async with running(url, tmp_path, roles, receiver=receiver, env=settings) as stack:
                ids = [f"tls-{i}" for i in range(10)]
                await post_events(stack.base, [agent(c) for c in ids])
                await wait_until(lambda: len(receiver.events) >= 30, timeout=15)
                got = {(r.event["conversation_id"], r.event["level"]) for r in receiver.events}
                assert got == every_level(ids)
                assert client.hlen("conversations:{0}") + sum(
                    client.hlen(f"conversations:{{{n}}}") for n in range(1, 16)
                ) == len(ids)
        finally:
            client.close()


# -- TLS with REDIS_TLS_CA_FILE in cluster and sentinel modes --------------------------------


def tls_args(certs: Path, port: int) -> list[str]:
    return [
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(certs / "server.crt"),
        "--tls-key-file", str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.crt"),
        "--tls-auth-clients", "no", "--tls-replication", "yes",
    ]  # fmt: skip


def tls_client(port: int, certs: Path) -> sync_redis.Redis:
    return sync_redis.Redis(
        port=port, ssl=True, ssl_ca_certs=str(certs / "ca.crt"), decode_responses=True
    )


async def events_go_through(settings_env: dict[str, str], tmp_path: Path) -> list[int]:
    """The API, on the tracker's own client for these settings, takes an agent message for
    conversations on many shards: their statuses."""
    from tests.support.rawhttp import exchange, http
    from tracker.api.app import create_app
    from tracker.api.server import start
    from tracker.settings import Settings

    env = {"RUN_DIR": str(tmp_path / "run"), "POD_ID": "tls", "HOST": "127.0.0.1"}
    settings = Settings.from_env({**env, "PORT": str(free_port()), **settings_env})
    runner = await start(create_app(settings), settings)
    statuses = []
    try:
        for n in range(8):
            path = f"/conversations/tls-{n}/agent-message"
            body = b'{"agent_id":"a","message_id":"m"}'
            statuses.append((await exchange(settings.port, http(path=path, body=body))).status)
    finally:
        await runner.cleanup()
    return statuses


def needs_tls(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed (it makes the test certificate)")
    certs = tmp_path / "certs"
    make_certificates(certs)
    return certs


async def test_rediss_cluster_with_redis_tls_ca_file(tmp_path: Path) -> None:
    """Three TLS-only cluster masters (the cluster bus on TLS too): the tracker's cluster
    client, trusting the CA through REDIS_TLS_CA_FILE, writes and reads on every node."""
    certs = needs_tls(tmp_path)
    ports = [free_port(cluster_bus=True) for _ in range(3)]
    cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
               "--tls-cluster", "yes", "--cluster-node-timeout", "2000"]  # fmt: skip
    with contextlib.ExitStack() as stack:
        for i, port in enumerate(ports):
            workdir = tmp_path / f"node{i}"
            proc = stack.enter_context(redis_process(workdir, *tls_args(certs, port), *cluster))
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.3)
            if proc.poll() is not None and tls_unsupported(workdir):
                pytest.skip("this redis-server was built without TLS support (BUILD_TLS=no)")
            wait_for(tls_client(port, certs), proc, workdir / "redis.log")
        for i, port in enumerate(ports):
            first, last = i * 16384 // 3, (i + 1) * 16384 // 3 - 1
            tls_client(port, certs).execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)  # type: ignore[no-untyped-call]
        for port in ports[1:]:
            tls_client(ports[0], certs).cluster("meet", "127.0.0.1", port)

        def cluster_ok() -> bool:
            return all(tls_client(p, certs).cluster("info")["cluster_state"] == "ok" for p in ports)

        await wait_until(cluster_ok, timeout=30)
        statuses = await events_go_through(
            {
                "REDIS_MODE": "cluster",
                "REDIS_URL": f"rediss://127.0.0.1:{ports[0]}/0",
                "REDIS_TLS_CA_FILE": str(certs / "ca.crt"),
                "SHARD_COUNT": "8",
            },
            tmp_path,
        )
        assert statuses == [200] * 8
        keys = [tls_client(p, certs).dbsize() for p in ports]
        assert all(keys), keys  # the shards spread over every master


async def test_rediss_sentinel_with_redis_tls_ca_file(tmp_path: Path) -> None:
    """A TLS-only master and a TLS-only sentinel: the tracker asks the sentinel for the
    master and talks to both over TLS, trusting the CA through REDIS_TLS_CA_FILE."""
    certs = needs_tls(tmp_path)
    master_port, sentinel_port = free_port(), free_port()
    with redis_process(tmp_path / "master", *tls_args(certs, master_port)) as master:
        with contextlib.suppress(subprocess.TimeoutExpired):
            master.wait(timeout=0.3)
        if master.poll() is not None and tls_unsupported(tmp_path / "master"):
            pytest.skip("this redis-server was built without TLS support (BUILD_TLS=no)")
        wait_for(tls_client(master_port, certs), master, tmp_path / "master" / "redis.log")
        conf = tmp_path / "sentinel" / "sentinel.conf"
        conf.parent.mkdir()
        conf.write_text(
            f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
            "sentinel down-after-milliseconds mymaster 2000\n"
        )
        sentinel_dir = tmp_path / "sentinel"
        args = ("--sentinel", *tls_args(certs, sentinel_port))
        with redis_process(sentinel_dir, *args, config=conf) as sentinel:
            wait_for(tls_client(sentinel_port, certs), sentinel, sentinel_dir / "redis.log")
            statuses = await events_go_through(
                {
                    "REDIS_MODE": "sentinel",
                    "REDIS_URL": f"rediss://127.0.0.1:{sentinel_port}/0",
                    "REDIS_TLS_CA_FILE": str(certs / "ca.crt"),
                },
                tmp_path,
            )
            assert statuses == [200] * 8
            assert tls_client(master_port, certs).dbsize() > 0
