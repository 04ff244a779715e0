"""The private parts of redis-py and prometheus_client the tracker relies on, pinned.

The code reaches into both libraries (tracker/redis/replies.py and lane.py, tracker/metrics.py's
`observe_many`, tracker/pod/listener.py's archive), so pyproject.toml bounds each to the minor
release these checks passed on. After an upgrade, a failure here names the part that changed:
change the code that uses it, then raise the bound in pyproject.toml. When every check passes
on a new minor release, raising the bound is all it takes.
"""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Protocol

import hiredis
import pytest
from packaging.requirements import Requirement
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from redis._parsers import BaseParser, _AsyncHiredisParser, _AsyncRESP2Parser
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.connection import HiredisRespSerializer
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from tracker.redis.replies import REPLY_CLASSES, EpochRefused, FencedError

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


class Server(Protocol):
    """What these tests use of conftest's ``redis_server`` (the session's own redis-server)."""

    @property
    def url(self) -> str: ...


def bound(dist: str) -> str:
    """What to do when a check fails: the installed version and pyproject's bound."""
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    spec = next(d for d in deps if Requirement(d).name == dist)
    return (
        f"{dist} {md.version(dist)} changed a private part the tracker uses: fix the code"
        f" that uses it, then revisit `{spec}` in pyproject.toml"
    )


REDIS = bound("redis")
PROMETHEUS = bound("prometheus-client")


@pytest.mark.parametrize("dist", ["redis", "prometheus-client"])
def test_the_installed_version_is_the_one_pyproject_allows(dist: str) -> None:
    """The checks below vouch for the installed version only."""
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    req = next(Requirement(d) for d in deps if Requirement(d).name == dist)
    upper = [s for s in req.specifier if s.operator == "<"]
    assert upper, f"{dist} needs an upper bound in pyproject.toml: the code uses its private parts"
    assert req.specifier.contains(md.version(dist)), f"{dist} {md.version(dist)} is not {req}"


# ---- redis-py ---------------------------------------------------------------------------


def test_the_parsers_share_one_table_of_error_classes_by_first_word() -> None:
    """replies.py adds the tracker's replies to ``BaseParser.EXCEPTION_CLASSES``."""
    table = getattr(BaseParser, "EXCEPTION_CLASSES", None)
    assert isinstance(table, dict), REDIS
    assert table.get("NOSCRIPT") is NoScriptError, REDIS
    for parser in (_AsyncHiredisParser, _AsyncRESP2Parser):
        assert parser.EXCEPTION_CLASSES is table, f"{parser.__name__}'s own table: {REDIS}"
    for code, cls in REPLY_CLASSES.items():
        assert table.get(code) is cls, f"{code} is not in the table: {REDIS}"


def test_parse_error_makes_the_class_from_the_text_without_its_first_word() -> None:
    """The lane turns hiredis's ReplyError into redis-py's class with ``parse_error``;
    `EpochRefused.epoch` reads the number that follows the stripped ``EPOCH``."""
    reader = hiredis.Reader()
    reader.feed(b"-EPOCH 7 the layout moved on\r\n-READONLY You can't write\r\n")
    epoch, readonly = reader.gets(), reader.gets()
    assert isinstance(epoch, hiredis.ReplyError)
    assert isinstance(readonly, hiredis.ReplyError)
    refused = BaseParser.parse_error(epoch.args[0])  # type: ignore[no-untyped-call]
    assert isinstance(refused, EpochRefused), REDIS
    assert str(refused) == "7 the layout moved on", REDIS
    assert refused.epoch == 7, REDIS
    moved = BaseParser.parse_error(readonly.args[0])  # type: ignore[no-untyped-call]
    assert isinstance(moved, ReadOnlyError), REDIS
    plain = BaseParser.parse_error("WHATEVER went wrong")  # type: ignore[no-untyped-call]
    assert type(plain) is ResponseError, REDIS


@pytest.mark.parametrize("parser", [_AsyncHiredisParser, _AsyncRESP2Parser])
async def test_a_client_raises_the_tracker_classes_with_either_parser(
    redis_server: Server, parser: type[Any]
) -> None:
    client = Redis.from_url(redis_server.url, decode_responses=True, parser_class=parser)
    try:
        await client.eval("return redis.error_reply('FENCED the lease moved')", 0)
    except ResponseError as exc:
        raised = exc
    else:
        pytest.fail("an error reply raised nothing")
    finally:
        await client.aclose()
    assert type(raised) is FencedError, f"{type(raised).__name__}: {REDIS}"
    assert str(raised) == "the lease moved", REDIS


async def test_a_connection_exposes_its_streams_after_connect(redis: Redis) -> None:
    """The lane makes a connection as the client does, then reads and writes its streams
    (``_reader``, ``_writer``) directly; ``_close`` drops a socket half set up."""
    conn = redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    assert isinstance(conn, AbstractConnection)
    await conn.connect()  # type: ignore[no-untyped-call]
    try:
        reader, writer = getattr(conn, "_reader", None), getattr(conn, "_writer", None)
        assert isinstance(reader, asyncio.StreamReader), REDIS
        assert isinstance(writer, asyncio.StreamWriter), REDIS
        # Nothing of the handshake is left unread: the first bytes are our reply.
        writer.write(b"*1\r\n$4\r\nPING\r\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"+PONG\r\n", REDIS
    finally:
        conn._close()  # type: ignore[no-untyped-call]
    assert conn._reader is None, REDIS
    assert conn._writer is None, REDIS
    assert writer.is_closing(), REDIS


def test_hiredis_packs_commands_as_redis_py_does() -> None:
    """tracker/redis/connection.py packs with redis-py's (undocumented) hiredis serializer."""
    command: tuple[Any, ...] = ("SET", "k", b"\x00v", 5)
    packed = HiredisRespSerializer().pack(*command)
    assert isinstance(packed, list), REDIS
    assert b"".join(packed) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\x00v\r\n$1\r\n5\r\n", REDIS


async def test_a_cluster_client_exposes_its_nodes_connection_settings(
    redis_server: Server,
) -> None:
    """connect() swaps the connection class a cluster client makes its nodes' connections
    with, and the cluster lane makes its own from a node's class and arguments (undocumented
    attributes; the constructor opens no connection)."""
    cluster = RedisCluster.from_url(redis_server.url)
    try:
        manager = cluster.nodes_manager
        assert issubclass(manager.connection_kwargs["connection_class"], AbstractConnection), REDIS
        nodes = list(manager.startup_nodes.values())
        assert nodes, REDIS
        for node in nodes:
            assert isinstance(node, ClusterNode), REDIS
            assert issubclass(node.connection_class, AbstractConnection), REDIS
            assert isinstance(node.connection_kwargs, dict), REDIS
        assert callable(manager.get_node_from_slot), REDIS
        assert asyncio.iscoroutinefunction(manager.initialize), REDIS
    finally:
        await cluster.aclose()


# ---- prometheus_client ------------------------------------------------------------------


def test_a_histogram_keeps_one_count_per_bucket_and_its_sum() -> None:
    """`observe_many` adds to ``_buckets[i]`` (the bucket's own count, not cumulative) for
    the index of the value in ``_upper_bounds``, and to ``_sum``."""
    registry = CollectorRegistry()
    parent = Histogram("pin_seconds", "d", ["route"], buckets=(1, 2), registry=registry)
    child = parent.labels("/x")
    assert getattr(child, "_upper_bounds", None) == [1.0, 2.0, math.inf], PROMETHEUS
    buckets = getattr(child, "_buckets", None)
    assert isinstance(buckets, list), PROMETHEUS
    assert len(buckets) == 3, PROMETHEUS
    buckets[1].inc(2)
    buckets[2].inc(1)
    child._sum.inc(12.5)
    got = {
        (s.name, s.labels.get("le")): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }
    assert got == {
        ("pin_seconds_bucket", "1.0"): 0,
        ("pin_seconds_bucket", "2.0"): 2,
        ("pin_seconds_bucket", "+Inf"): 3,
        ("pin_seconds_count", None): 3,
        ("pin_seconds_sum", None): 12.5,
    }, PROMETHEUS


def test_an_mmaped_dict_reads_and_writes_as_the_listener_does(tmp_path: Path) -> None:
    """tracker/pod/listener.py's `fold_into_archive`, call by call."""
    path = str(tmp_path / "counter_1.db")
    store = MmapedDict(path)  # type: ignore[no-untyped-call]
    store.write_value("a", 2.0, 100.0)  # type: ignore[no-untyped-call]
    store.write_value("b", 3.0, 0.0)  # type: ignore[no-untyped-call]
    store.close()  # type: ignore[no-untyped-call]
    rows = list(MmapedDict.read_all_values_from_file(path))  # type: ignore[no-untyped-call]
    assert [row[:3] for row in rows] == [("a", 2.0, 100.0), ("b", 3.0, 0.0)], PROMETHEUS
    assert all(len(row) == 4 for row in rows), f"(key, value, timestamp, pos): {PROMETHEUS}"
    again = MmapedDict(path)  # type: ignore[no-untyped-call]
    try:
        assert again.read_value("a") == (2.0, 100.0), PROMETHEUS  # type: ignore[no-untyped-call]
        assert again.read_value("new") == (0.0, 0.0), PROMETHEUS  # type: ignore[no-untyped-call]
    finally:
        again.close()  # type: ignore[no-untyped-call]


WRITER = """
from prometheus_client import Counter, Histogram
from tracker.metrics import observe_many

Counter("pin_jobs", "d").inc(3)
histogram = Histogram("pin_wait_seconds", "d", ["how"], buckets=(1, 2))
for value in (0.5, 1.5, 9.0):
    histogram.labels("one").observe(value)
observe_many(histogram.labels("many"), [0.5, 1.5, 9.0])
print(__import__("os").getpid())
"""


def pod_samples(metrics_dir: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        if metric.name in ("pin_jobs", "pin_wait_seconds")
        for s in metric.samples
    }


def test_dead_processes_fold_into_the_archive_the_collector_reads(tmp_path: Path) -> None:
    """A role process's files (written by prometheus_client in multiprocess mode, the
    histogram through `observe_many`) folded into ``<type>_archive.db`` read the same."""
    from tracker.pod.listener import fold_into_archive

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    pids = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", WRITER], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        pids.append(int(done.stdout))
    live = pod_samples(tmp_path)
    assert live[("pin_jobs_total", ())] == 6, PROMETHEUS
    for bucket in ("1.0", "2.0", "+Inf"):
        one = live[("pin_wait_seconds_bucket", (("how", "one"), ("le", bucket)))]
        many = live[("pin_wait_seconds_bucket", (("how", "many"), ("le", bucket)))]
        assert one == many, f"le={bucket}: {PROMETHEUS}"
    for pid in pids:
        mark_process_dead(pid, str(tmp_path))  # type: ignore[no-untyped-call]
        fold_into_archive(pid, tmp_path)
    left = sorted(p.name for p in tmp_path.glob("*.db") if p.name.startswith(("counter", "hist")))
    assert left == ["counter_archive.db", "histogram_archive.db"], PROMETHEUS
    assert pod_samples(tmp_path) == live, PROMETHEUS
