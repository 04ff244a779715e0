"""Real tracker processes for end-to-end tests: one role (`python -m tracker ROLE`), a whole
pod (`tracker pod`: supervisord and every role), and `running`, the one way a test starts
roles or pods with a webhook receiver and stops them again."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.receiver import Receiver
from tests.support.redis_server import free_port
from tests.support.waiting import wait_http


class Role:
    """One `python -m tracker ROLE` process, logging to a file, stopped by its pid."""

    def __init__(
        self, args: list[str], env: Mapping[str, str], log: Path, cwd: str | None = None
    ) -> None:
        self.args = args
        self.log = log
        self.logfile = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracker", *args],
            env={**os.environ, **env},
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.logfile.close()
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def role_env(redis_url: str, run_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url,
        "RUN_DIR": str(run_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics"),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


class Pod:
    """A whole pod: `tracker pod` (supervisord and every role) in its own RUN_DIR."""

    def __init__(
        self, name: str, redis_url: str, workdir: Path, *, cwd: str | None = None, **extra: str
    ) -> None:
        """`cwd`: the directory the pod and `ctl` run from (by default this one)."""
        self.name = name
        self.port = free_port()
        self.run_dir = workdir / name
        self.cwd = cwd
        self.env = role_env(redis_url, self.run_dir, POD_ID=name, PORT=str(self.port), **extra)
        self.role = Role(["pod"], self.env, workdir / f"{name}.log", cwd)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ctl(self, *args: str) -> str:
        return self.ctl_run(*args).stdout

    def ctl_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`tracker ctl ARGS` for this pod, from the pod's working directory; stderr is
        folded into stdout."""
        return subprocess.run(
            [sys.executable, "-m", "tracker", "ctl", *args],
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            cwd=self.cwd,
        )

    def pid_of(self, program: str) -> int:
        return int(self.ctl("pid", program).strip())

    async def metric_sum(self, name: str) -> float:
        async with aiohttp.ClientSession() as session, session.get(f"{self.base}/metrics") as resp:
            text = await resp.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#") and line[len(name)] in "{ "
        )

    def output(self) -> str:
        return self.role.output()

    def stop(self) -> int:
        return self.role.stop(timeout=60)


class Stack:
    """Tracker processes on one Redis: roles (`python -m tracker ROLE`) sharing one API
    port, and whole pods, each with its settings on top of the stack's. A role belongs to
    a pod id (POD_ID; its RUN_DIR, and so its metrics, is that pod's). `running` builds
    one; a test starts more (a second sweeper, a pod) while it runs."""

    def __init__(self, redis_url: str, workdir: Path, env: Mapping[str, str]) -> None:
        """`env`: every process's settings; its POD_ID (by default "pod-a") is the pod id
        of the roles started without one."""
        self.redis_url = redis_url
        self.workdir = workdir
        self.port = int(env["PORT"]) if "PORT" in env else free_port()
        self.pod_id = env.get("POD_ID", "pod-a")
        self.env = {**env, "PORT": str(self.port), "POD_ID": self.pod_id}
        self.roles: list[Role] = []
        self.pods: list[Pod] = []
        self._serial = itertools.count()

    @property
    def base(self) -> str:
        """The API roles' base URL (a pod has its own: `Pod.base`)."""
        return f"http://127.0.0.1:{self.port}"

    def role_env(self, pod: str | None = None, **env: str) -> dict[str, str]:
        """The whole environment of a role of pod `pod` (a `tracker` command's too)."""
        pod = pod or self.pod_id
        settings = {**self.env, "POD_ID": pod, **env}
        return role_env(self.redis_url, self.workdir / "run" / pod, **settings)

    def start(self, role: str, pod: str | None = None, **env: str) -> Role:
        """Start `role` ("api", "sweeper", "consumer --index 1", ...) as pod `pod`'s."""
        args = role.split()
        name = "-".join(a for a in args if not a.startswith("-"))
        log = self.workdir / f"{pod or self.pod_id}.{name}.{next(self._serial)}.log"
        started = Role(args, self.role_env(pod, **env), log)
        self.roles.append(started)
        return started

    def pod(self, name: str, cwd: str | None = None, **env: str) -> Pod:
        """Start a whole pod (its own port and RUN_DIR) with the stack's settings and `env`."""
        settings = {k: v for k, v in self.env.items() if k not in ("PORT", "POD_ID")}
        started = Pod(name, self.redis_url, self.workdir, cwd=cwd, **{**settings, **env})
        self.pods.append(started)
        return started

    def stop(self) -> None:
        """Stop every process, the last started first."""
        for pod in reversed(self.pods):
            pod.stop()
        for role in reversed(self.roles):
            role.stop()

    def tracebacks(self) -> str:
        """The end of every log that holds a Python traceback."""
        logs = [p.output() for p in self.pods] + [r.output() for r in self.roles]
        return "\n".join(text[-3000:] for text in logs if "Traceback" in text)


@contextlib.asynccontextmanager
async def running(
    redis_url: str,
    workdir: Path,
    roles: Sequence[str | Sequence[str]] = (),
    *,
    pods: Sequence[str] = (),
    receiver: Receiver | None = None,
    ready: str | None = "/ready",
    check_logs: bool = True,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """Start `roles` and `pods` on `redis_url` with settings `env`, and wait until each API
    answers `ready` (None: do not wait). A role is "ROLE ARGS" ("consumer --index 1") of
    pod POD_ID ("pod-a" unless `env` names one), or ("ROLE ARGS", pod id). With a
    `receiver` (not started yet), deliver to it: NOTIFY_SINK=webhook and its URL and
    secret, unless `env` says otherwise. At the end stop every process (and the receiver);
    then, unless the body raised, fail if a log holds a traceback (unless `check_logs` is
    false)."""
    if receiver is not None:
        await receiver.start()
        hook = {
            "NOTIFY_SINK": "webhook",
            "NOTIFY_WEBHOOK_URL": receiver.url,
            "NOTIFY_WEBHOOK_SECRET": receiver.secret,
        }
        env = {**hook, **(env or {})}
    stack = Stack(redis_url, workdir, env or {})
    try:
        for spec in roles:
            name, of_pod = (spec, None) if isinstance(spec, str) else spec
            stack.start(name, of_pod)
        for name in pods:
            stack.pod(name)
        if ready is not None:
            if any(r.args[0] == "api" for r in stack.roles):
                await wait_http(f"{stack.base}{ready}", timeout=30)
            for pod in stack.pods:
                await wait_http(f"{pod.base}{ready}", timeout=30)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)
        if receiver is not None:
            await receiver.stop()
    assert not check_logs or not stack.tracebacks(), stack.tracebacks()


@contextlib.contextmanager
def running_api(redis_url: str, workdir: Path, **env: str) -> Iterator[str]:
    """`running` for a synchronous test (a module fixture, a Hypothesis test): one API
    process, ready when /health answers; yields its base URL."""

    async def start() -> Stack:
        stack = Stack(redis_url, workdir, env)
        stack.start("api")
        try:
            await wait_http(f"{stack.base}/health")
        except BaseException:
            stack.stop()
            raise
        return stack

    stack = asyncio.run(start())
    try:
        yield stack.base
    finally:
        stack.stop()
    assert not stack.tracebacks(), stack.tracebacks()


def percentile(values: list[int], q: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def post_events(base: str, items: list[dict[str, Any]], chunk: int = 500) -> list[Any]:
    results: list[Any] = []
    async with aiohttp.ClientSession() as session:
        for i in range(0, len(items), chunk):
            async with session.post(f"{base}/events", json=items[i : i + chunk]) as resp:
                assert resp.status == 200, await resp.text()
                results += (await resp.json())["results"]
    return results
