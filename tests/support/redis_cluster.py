"""A local Redis Cluster (3 masters, 3 replicas) and a Sentinel setup, on free loopback ports."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import redis as sync_redis

from tests.support.redis_server import RedisServer


class ClusterNode(RedisServer):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, appendonly=True, cluster_bus=True)
        self.extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--cluster-replica-validity-factor",
            "0",
        ]


class RedisCluster:
    """Six cluster-enabled redis-servers joined with `redis-cli --cluster create`."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        self.nodes = [ClusterNode(workdir / f"node{i}") for i in range(masters * (1 + replicas))]
        self.replicas = replicas

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        try:
            self._start()
        except Exception:
            self.stop()
            raise

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        if self.replicas == 0:
            self._assign_slots()
            return
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is not installed"
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok()

    def _assign_slots(self) -> None:
        """Masters only (any number, even one or two, which `--cluster create` refuses):
        split the 16384 slots evenly, then introduce every node to the first."""
        count = len(self.nodes)
        for i, node in enumerate(self.nodes):
            first, last = i * 16384 // count, (i + 1) * 16384 // count - 1
            node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)  # type: ignore[no-untyped-call]
        for node in self.nodes[1:]:
            self.nodes[0].client().cluster("meet", "127.0.0.1", node.port)
        self.wait_ok()

    def wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        alive = [n for n in self.nodes if n.proc is not None]
        while time.monotonic() < deadline:
            states = [n.client().cluster("info") for n in alive]
            links = [n.client().info("replication") for n in alive]
            synced = all(i.get("master_link_status", "up") == "up" for i in links)
            if synced and all(s["cluster_state"] == "ok" for s in states):
                return
            time.sleep(0.2)
        raise RuntimeError("the cluster did not reach cluster_state:ok")

    def wait_masters(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` live nodes are masters and the cluster is ok (after a failover)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.masters()) == count:
                self.wait_ok(timeout=max(1.0, deadline - time.monotonic()))
                return
            time.sleep(0.2)
        raise RuntimeError(f"no failover: {len(self.masters())} masters alive")

    def masters(self) -> list[ClusterNode]:
        out = []
        for node in self.nodes:
            if node.proc is None:
                continue
            role = node.client().role()[0]
            if role == "master":
                out.append(node)
        return out

    def client(self) -> sync_redis.RedisCluster:
        return sync_redis.RedisCluster(
            host="127.0.0.1", port=self.nodes[0].port, decode_responses=True
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelSetup:
    """A master, a replica and three sentinels watching them as `mymaster`."""

    def __init__(self, workdir: Path, master_name: str = "mymaster") -> None:
        self.master_name = master_name
        self.master = RedisServer(workdir / "master", appendonly=True)
        self.replica = RedisServer(workdir / "replica", appendonly=True)
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.sentinels = [RedisServer(workdir / f"sentinel{i}") for i in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis://{hosts}/0"

    def start(self) -> None:
        try:
            self._start()
        except Exception:
            self.stop()
            raise

    def _start(self) -> None:
        self.master.start()
        self.replica.start()
        binary = shutil.which("redis-server")
        assert binary
        for s in self.sentinels:
            conf = s.workdir / "sentinel.conf"
            conf.write_text(
                f"port {s.port}\nbind 127.0.0.1\ndir {s.workdir}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                f"sentinel failover-timeout {self.master_name} 5000\n"
            )
            s.proc = subprocess.Popen(
                [binary, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            s.wait_ready()
        self.wait_replica_synced(self.replica)

    def wait_replica_synced(self, replica: RedisServer, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if replica.client().info("replication").get("master_link_status") == "up":
                return
            time.sleep(0.1)
        raise RuntimeError("the replica did not sync")

    def current_master_port(self) -> int:
        client = self.sentinels[0].client()
        address: Any = client.sentinel_get_master_addr_by_name(self.master_name)
        return int(address[1])

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            server.stop()
