"""`/ready`: can this pod do its work? Its own processes, not the Redis every pod shares.

Readiness fails for this pod's own faults only:
- a program supervisord runs is down (exited, backing off, fatal); one an operator stopped
  (`tracker ctl stop sweeper`) is left out;
- a role process (sweeper, consumer-N) has not completed a loop round since it started,
  or has written nothing to its heartbeat file for `stall_ms`: it is stuck;
- a shard this pod leads has not been swept within the watchdog window (tracker/progress.py).

A Redis outage fails every pod alike, so it does not fail readiness: taking every pod out
of the Service would turn the documented 503 + Retry-After into connection errors. A role
backing off from a Redis error, or silent while Redis does not answer this API either, is
reported in the body (and in tracker_role_redis_failing) instead.

Outside supervisord (roles started one by one) the roles are those with a heartbeat file
in RUN_DIR whose process is alive.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tracker.pod import heartbeat
from tracker.pod.heartbeat import RoleState
from tracker.pod.programs import Pod, read_pod
from tracker.settings import Settings
from tracker.timing import progress

STALL_MIN_MS = 30_000


def stall_ms(settings: Settings) -> int:
    """How long a role may go without writing its heartbeat file before it counts as stuck:
    three of the sweeper's longest rounds (CHECK_INTERVAL_MS, at most a fifth of the lease
    TTL), and at least STALL_MIN_MS: a consumer waiting for room in its hold (a burst, a
    long webhook outage) writes nothing meanwhile, and is not stuck for that."""
    return max(STALL_MIN_MS, 3 * min(settings.check_interval_ms, settings.leader_ttl_ms // 5))


@dataclass
class Verdict:
    problems: list[tuple[str, str]] = field(default_factory=list)  # (code, message)
    roles: dict[str, str] = field(default_factory=dict)  # role -> what it is doing
    redis: str = "ok"

    @property
    def ready(self) -> bool:
        return not self.problems

    def body(self) -> dict[str, object]:
        report: dict[str, object] = {"redis": self.redis, "roles": self.roles}
        if self.ready:
            return {"status": "ready", **report}
        code = self.problems[0][0]
        message = "; ".join(message for _, message in self.problems)
        return {"error": {"code": code, "message": message}, **report}


def expected_roles(
    settings: Settings, pod: Pod | None, states: Sequence[RoleState]
) -> dict[str, int]:
    """Role name -> pid of the process that should keep its heartbeat (0: unknown)."""
    if pod is None:
        return {s.name: s.pid for s in states if _alive(s.pid)}
    roles: dict[str, int] = {}
    for program in pod.programs:
        if not program.up:
            continue
        if program.group == "sweeper":
            roles["sweeper"] = program.pid
            if settings.sweeper_delivers:
                roles["sweeper-delivery"] = program.pid
        elif program.group == "consumer":
            roles[program.name] = program.pid
    return roles


def assess(settings: Settings, redis_error: str | None) -> Verdict:
    """This pod's readiness now (blocking: it asks supervisord and reads files);
    `redis_error`: why this API could not ping Redis just now (None: it answered)."""
    return judge(
        settings,
        read_pod(settings),
        heartbeat.read_all(settings),
        progress.stale_shards(settings),
        redis_error,
        int(time.time() * 1000),
    )


def judge(
    settings: Settings,
    pod: Pod | None,
    states: Sequence[RoleState],
    stale_shards: Sequence[int],
    redis_error: str | None,
    now_ms: int,
) -> Verdict:
    """The verdict from what supervisord, the role files and the watchdog say."""
    verdict = Verdict(redis="ok" if redis_error is None else f"unreachable: {redis_error}")
    if pod is not None:
        for program in pod.programs:
            if not program.up and program.state != "STOPPED":
                verdict.problems.append(("not_running", f"{program.name} is {program.state}"))
    by_name = {s.name: s for s in states}
    sweeper_blocked = redis_error is not None
    for name, pid in sorted(expected_roles(settings, pod, states).items()):
        state = by_name.get(name)
        if state is not None and pid and state.pid != pid:
            state = None  # the file of a previous process: this one has not reported yet
        doing, problem = _judge(state, now_ms, stall_ms(settings), redis_error)
        verdict.roles[name] = doing
        if problem is not None:
            verdict.problems.append((problem, f"{name}: {doing}"))
        sweeper_blocked |= name == "sweeper" and state is not None and state.error_kind is not None
    if stale_shards and not sweeper_blocked:
        shards = ", ".join(str(s) for s in stale_shards)
        verdict.problems.insert(0, ("not_sweeping", f"shards not swept recently: {shards}"))
    return verdict


def _judge(
    state: RoleState | None, now_ms: int, limit_ms: int, redis_error: str | None
) -> tuple[str, str | None]:
    """What one role is doing, and the problem code when that makes the pod unready."""
    if state is not None and now_ms - state.written_ms <= limit_ms:
        if state.error_kind is None:
            return "ok", None
        since_s = (now_ms - (state.error_since_ms or now_ms)) / 1000
        return f"backing off from Redis ({state.error_kind}) for {since_s:.0f}s", None
    if state is None:
        doing, code = "not reported yet", "starting"
    else:
        doing, code = f"silent for {(now_ms - state.written_ms) / 1000:.0f}s", "stalled"
    if redis_error is not None:  # Redis answers nobody: the silence is not this pod's fault
        return f"{doing}, waiting for Redis", None
    return doing, code


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
