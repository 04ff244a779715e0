"""Readiness decisions: what supervisord says, the role files the roles write (through the
real Heartbeat), and the progress watchdog, judged at chosen moments."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tracker.pod import heartbeat
from tracker.pod.heartbeat import Heartbeat, RoleState
from tracker.pod.programs import Pod, Program
from tracker.pod.readiness import judge, stall_ms
from tracker.settings import Settings

PID = os.getpid()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings("redis://127.0.0.1:1/0", tmp_path / "run")


def pod(*programs: tuple[str, str, str]) -> Pod:
    """supervisord's view: (group, name, state); running processes carry this test's pid."""
    return Pod(
        1, [Program(g, n, s, PID if s in ("RUNNING", "STARTING") else 0) for g, n, s in programs]
    )


HEALTHY = (
    ("api", "api-0", "RUNNING"),
    ("sweeper", "sweeper", "RUNNING"),
    ("consumer", "consumer-0", "RUNNING"),
    ("consumer", "consumer-1", "RUNNING"),
    ("metrics-listener", "metrics-listener", "RUNNING"),
)


def beat(settings: Settings, *names: str) -> list[RoleState]:
    for name in names:
        Heartbeat(settings, name).progress()
    return heartbeat.read_all(settings)


def fail(settings: Settings, name: str, kind: str) -> list[RoleState]:
    Heartbeat(settings, name).failed(kind, "Error 111 connecting to redis: Connection refused")
    return heartbeat.read_all(settings)


def now(states: list[RoleState], later_ms: int = 0) -> int:
    return max(s.written_ms for s in states) + later_ms


def test_ready_when_every_role_reports_progress(settings: Settings) -> None:
    states = beat(settings, "sweeper", "consumer-0", "consumer-1")
    verdict = judge(settings, pod(*HEALTHY), states, [], None, now(states))
    assert verdict.ready
    assert verdict.body() == {
        "status": "ready",
        "redis": "ok",
        "roles": {"consumer-0": "ok", "consumer-1": "ok", "sweeper": "ok"},
    }


def test_not_ready_before_the_roles_have_completed_a_round(settings: Settings) -> None:
    """Not vacuously true: supervisord runs a sweeper and consumers that have not reported."""
    states = beat(settings, "consumer-0")
    verdict = judge(settings, pod(*HEALTHY), states, [], None, now(states))
    assert not verdict.ready
    body = verdict.body()
    assert body["error"] == {
        "code": "starting",
        "message": "consumer-1: not reported yet; sweeper: not reported yet",
    }


def test_a_restarted_process_counts_from_its_own_report(settings: Settings) -> None:
    """The file a killed consumer left behind does not vouch for its successor."""
    states = beat(settings, "sweeper", "consumer-0", "consumer-1")
    restarted = Pod(
        1, [*pod(*HEALTHY).programs[:2], Program("consumer", "consumer-0", "RUNNING", PID + 1)]
    )
    verdict = judge(settings, restarted, states, [], None, now(states))
    assert verdict.problems == [("starting", "consumer-0: not reported yet")]


def test_a_role_silent_past_the_stall_limit_is_stuck(settings: Settings) -> None:
    states = beat(settings, "sweeper", "consumer-0", "consumer-1")
    verdict = judge(settings, pod(*HEALTHY), states, [], None, now(states, stall_ms(settings) + 1))
    assert not verdict.ready
    assert {code for code, _ in verdict.problems} == {"stalled"}


def test_a_program_down_fails_and_one_stopped_by_an_operator_does_not(settings: Settings) -> None:
    states = beat(settings, "sweeper", "consumer-0", "consumer-1")
    crashed = pod(*HEALTHY[:3], ("consumer", "consumer-1", "BACKOFF"), HEALTHY[4])
    verdict = judge(settings, crashed, states, [], None, now(states))
    assert verdict.problems == [("not_running", "consumer-1 is BACKOFF")]
    stopped = pod(HEALTHY[0], ("sweeper", "sweeper", "STOPPED"), *HEALTHY[2:])
    assert judge(settings, stopped, states, [], None, now(states)).ready


def test_a_redis_outage_is_reported_but_does_not_fail_readiness(settings: Settings) -> None:
    """Every pod sees the same outage: none leaves the Service because of it. Roles backing
    off say so; roles silent while Redis answers nobody wait for it; the sweeper's led
    shards go unswept meanwhile."""
    states = beat(settings, "consumer-0", "consumer-1")
    states = fail(settings, "sweeper", "connection")
    verdict = judge(settings, pod(*HEALTHY), states, [3], "connection: refused", now(states))
    assert verdict.ready
    body = verdict.body()
    assert body["redis"] == "unreachable: connection: refused"
    assert body["roles"] == {
        "consumer-0": "ok",
        "consumer-1": "ok",
        "sweeper": "backing off from Redis (connection) for 0s",
    }
    later = now(states, stall_ms(settings) + 1)  # a frozen Redis: calls hang, files go quiet
    verdict = judge(settings, pod(*HEALTHY), states, [3], "timeout", later)
    assert verdict.ready, verdict.problems
    assert verdict.roles["consumer-0"].endswith("waiting for Redis")


def test_a_redis_error_reply_is_reported_not_failed_on(settings: Settings) -> None:
    """OOM or READONLY: PING still answers, the roles back off and say so."""
    beat(settings, "consumer-0", "consumer-1")
    states = fail(settings, "sweeper", "oom")
    verdict = judge(settings, pod(*HEALTHY), states, [0, 1], None, now(states))
    assert verdict.ready
    assert verdict.roles["sweeper"].startswith("backing off from Redis (oom)")


def test_the_watchdog_fails_a_sweeper_that_leads_shards_it_does_not_sweep(
    settings: Settings,
) -> None:
    states = beat(settings, "sweeper", "consumer-0", "consumer-1")
    verdict = judge(settings, pod(*HEALTHY), states, [2, 5], None, now(states))
    assert verdict.body()["error"] == {
        "code": "not_sweeping",
        "message": "shards not swept recently: 2, 5",
    }


def test_phase1_expects_the_sweepers_delivery_loop(tmp_path: Path) -> None:
    settings = make_settings("redis://127.0.0.1:1/0", tmp_path / "run", MODE="phase1")
    states = beat(settings, "sweeper")
    phase1 = pod(HEALTHY[0], HEALTHY[1])
    verdict = judge(settings, phase1, states, [], None, now(states))
    assert verdict.problems == [("starting", "sweeper-delivery: not reported yet")]
    states = beat(settings, "sweeper-delivery")
    assert judge(settings, phase1, states, [], None, now(states)).ready


def test_outside_supervisord_the_roles_are_those_that_reported(settings: Settings) -> None:
    assert judge(settings, None, [], [], None, 0).ready  # the API alone
    states = beat(settings, "sweeper")
    assert judge(settings, None, states, [], None, now(states)).ready
    late = now(states, stall_ms(settings) + 1)
    assert judge(settings, None, states, [], None, late).problems == [
        ("stalled", f"sweeper: silent for {(late - states[0].written_ms) / 1000:.0f}s")
    ]
