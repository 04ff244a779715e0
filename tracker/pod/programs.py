"""The programs of this pod as its supervisord reports them (XML-RPC on RUN_DIR's socket).

The API asks for them at scrape time (process metrics) and for `/ready` (are this pod's
processes up). Outside supervisord (roles started one by one) there is no answer: None.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from dataclasses import dataclass
from typing import Any, cast

from tracker.settings import Settings

SOCKET_NAME = "supervisor.sock"
TIMEOUT_S = 1.0
#: supervisord's process states a live process is in.
UP_STATES = frozenset({"STARTING", "RUNNING"})


@dataclass(frozen=True, slots=True)
class Program:
    """One process supervisord runs (`group` is the program: ``consumer``; `name` the
    process: ``consumer-1``)."""

    group: str
    name: str
    state: str
    pid: int  # 0 when not running

    @property
    def up(self) -> bool:
        return self.state in UP_STATES


@dataclass(frozen=True, slots=True)
class Pod:
    supervisord_pid: int
    programs: list[Program]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self.socket_path = path
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self.socket_path, self.timeout)


def read_pod(settings: Settings, timeout: float = TIMEOUT_S) -> Pod | None:
    """supervisord's pid and every process it runs; None when no supervisord answers on
    this RUN_DIR's socket (blocking: call it from a thread in async code)."""
    path = str(settings.run_dir.resolve() / SOCKET_NAME)
    proxy = xmlrpc.client.ServerProxy(
        "http://localhost/RPC2", transport=_UnixTransport(path, timeout)
    )
    try:
        with proxy:
            pid = cast(int, proxy.supervisor.getPID())
            infos = cast(list[dict[str, Any]], proxy.supervisor.getAllProcessInfo())
    except (OSError, http.client.HTTPException, xmlrpc.client.Error):
        return None
    programs = [
        Program(str(i["group"]), str(i["name"]), str(i["statename"]), int(i["pid"])) for i in infos
    ]
    return Pod(pid, programs)
