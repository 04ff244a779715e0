"""Logs (issue 15.10, 15.11): JSON lines with millisecond UTC times, role, pid, pod and the
message's key=value pairs as typed fields; text lines that tell processes apart; the
request id on every line about a request; an access log only when asked; a pod whose
JSON stream holds nothing else (supervisord's own lines go to a file)."""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from tests.support.processes import Pod
from tests.support.rawhttp import api_settings, exchange, http, start_api
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_http, wait_until
from tracker.__main__ import role_name
from tracker.logs import REQUEST_ID, JsonFormatter, TextFormatter, configure

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def record(msg: str, *args: Any, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("tracker.timing.sweeper", level, __file__, 1, msg, args, None)


def as_json(line: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(line)
    return data


def test_json_line_has_ms_utc_time_role_pid_pod_and_typed_fields() -> None:
    line = JsonFormatter("consumer-1", "pod-a").format(
        record("swept shard=%d moved=%d took=%.3f lag=%.1fs owner=%s", 3, 12, 0.0125, 2.0, "p")
    )
    data = as_json(line)
    assert TIMESTAMP.fullmatch(data["ts"])
    assert data["level"] == "info"
    assert (data["role"], data["pod"], data["pid"]) == ("consumer-1", "pod-a", os.getpid())
    assert data["logger"] == "tracker.timing.sweeper"
    assert data["msg"] == "swept"
    assert (data["shard"], data["moved"], data["took"]) == (3, 12, 0.013)  # as formatted
    assert data["lag"] == "2.0s"  # not a lone conversion: the text as written
    assert data["owner"] == "p"
    assert "request_id" not in data


def test_json_fields_keep_spaces_equals_and_the_message_text() -> None:
    formatter = JsonFormatter("api", "pod-a")
    error = ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    data = as_json(formatter.format(record("redis unavailable route=%s error=%s", "/x", error)))
    assert data["msg"] == "redis unavailable"
    assert data["error"] == "Error 111 connecting to 127.0.0.1:1. Connection refused."
    data = as_json(formatter.format(record("100%% done x=%s", "a b=c")))
    assert (data["msg"], data["x"]) == ("100% done", "a b=c")
    data = as_json(formatter.format(record("notification %s", '{"level": 1}')))
    assert data["msg"] == 'notification {"level": 1}'
    data = as_json(formatter.format(record("clash pod=%s role=%s", "pod-a", "other")))
    assert (data["pod"], data["role"], data["role_"]) == ("pod-a", "api", "other")
    data = as_json(formatter.format(record("plain text a=1 b=two words")))
    assert (data["msg"], data["a"], data["b"]) == ("plain text", "1", "two words")


def test_json_line_carries_the_request_id_and_the_traceback() -> None:
    token = REQUEST_ID.set("req-7")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            rec = record("failed x=%s", 1, level=logging.ERROR)
            rec.exc_info = sys.exc_info()
        data = as_json(JsonFormatter("api", "p").format(rec))
    finally:
        REQUEST_ID.reset(token)
    assert data["request_id"] == "req-7"
    assert data["level"] == "error"
    assert "ValueError: boom" in data["exc"]


def test_text_lines_tell_the_processes_apart() -> None:
    parser = argparse.Namespace
    assert role_name(parser(command="consumer", index=1), {}) == "consumer-1"
    assert role_name(parser(command="consumer", index=0), {}) == "consumer-0"
    assert role_name(parser(command="api"), {"SUPERVISOR_PROCESS_NAME": "api-1"}) == "api-1"
    assert role_name(parser(command="sweeper"), {}) == "sweeper"
    line = TextFormatter("consumer-1").format(record("delivered n=%d", 3))
    assert re.fullmatch(
        rf"{TIMESTAMP.pattern} INFO role=consumer-1 tracker.timing.sweeper: delivered n=3", line
    )
    token = REQUEST_ID.set("req-9")
    try:
        assert TextFormatter("api").format(record("x")).endswith(" x request_id=req-9")
    finally:
        REQUEST_ID.reset(token)


def test_json_mode_logs_an_uncaught_exception_as_one_json_line(tmp_path: Path) -> None:
    code = (
        "import sys; from tracker.logs import configure;"
        " configure('INFO', 'json', 'sweeper', 'pod-x', sys.stdout);"
        " raise RuntimeError('crash')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    data = as_json(lines[0])
    assert (data["level"], data["role"], data["msg"]) == (
        "critical",
        "sweeper",
        "uncaught exception",
    )
    assert "RuntimeError: crash" in data["exc"]
    assert done.stderr == ""


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The root logger, as `configure` sets it in JSON, into a buffer; restored after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, sys.excepthook
    stream = io.StringIO()
    configure("DEBUG", "json", "api", "pod-t", stream)
    yield stream
    root.handlers[:], _, sys.excepthook = saved
    root.setLevel(saved[1])


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [as_json(line) for line in stream.getvalue().splitlines()]


async def test_15_11_every_line_about_a_request_has_its_id_and_the_access_log_is_optional(
    redis_server: RedisServer, redis: Redis, tmp_path: Path, json_log: io.StringIO
) -> None:
    quiet, runner = await start_api(api_settings(redis_server.url, tmp_path / "a"), redis)
    try:
        reply = await exchange(quiet.port, http("GET", "/health", headers={"X-Request-ID": "q-1"}))
        assert reply.headers["x-request-id"] == "q-1"
    finally:
        await runner.cleanup()
    assert not [line for line in lines_of(json_log) if line["logger"] == "tracker.access"]

    settings = api_settings(redis_server.url, tmp_path / "b", ACCESS_LOG="1")
    loud, runner = await start_api(settings, redis)
    try:
        await exchange(loud.port, http("GET", "/health", headers={"X-Request-ID": "r-1"}))
        await exchange(loud.port, http(body=b"{", headers={"X-Request-ID": "r-2"}))
        await exchange(loud.port, b"get / HTTP/1.1\r\nHost: t\r\n\r\n")  # the parser's
    finally:
        await runner.cleanup()
    access = [line for line in lines_of(json_log) if line["logger"] == "tracker.access"]
    assert [(a["request_id"], a["status"], a["method"]) for a in access] == [
        ("r-1", 200, "GET"),
        ("r-2", 400, "POST"),
    ]
    assert access[1]["route"] == "/conversations/{id}/agent-message"
    assert isinstance(access[0]["ms"], float)
    refused = [line for line in lines_of(json_log) if line["msg"] == "unparsable request"]
    assert len(refused) == 1
    assert refused[0]["request_id"]  # one made for it, also sent in its answer


# --- a whole pod in JSON ---------------------------------------------------------------------


@pytest.mark.slow
async def test_15_10_a_json_pod_writes_nothing_but_json_and_names_each_process(
    redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> None:
    pod = Pod(
        "json-pod",
        redis_server.url,
        tmp_path,
        LOG_FORMAT="json",
        CONSUMER_PROCESSES="2",
        API_PROCESSES="2",
    )
    try:
        await wait_http(f"{pod.base}/ready", timeout=30)

        def roles() -> set[str]:
            text = pod.role.output()
            return {as_json(line)["role"] for line in text.splitlines() if line.startswith("{")}

        expected = {"api-0", "api-1", "consumer-0", "consumer-1", "sweeper"}
        await wait_until(lambda: expected <= roles(), timeout=30, what=lambda: roles())
    finally:
        pod.stop()
    lines = pod.role.output().splitlines()
    assert lines
    for line in lines:
        data = as_json(line)  # every line of the pod's stream is JSON
        assert TIMESTAMP.fullmatch(data["ts"])
        assert data["pod"] == "json-pod"
    supervisord_log = (tmp_path / "json-pod" / "supervisord.log").read_text()
    assert "spawned: 'consumer-1'" in supervisord_log  # its own lines went to a file
