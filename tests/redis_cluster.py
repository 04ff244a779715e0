"""A local Redis Cluster (3 masters, 3 replicas) and a Sentinel setup, on free loopback ports."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis as sync_redis

from tests.redis_server import RedisServer


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
            role = node.client().execute_command("ROLE")[0]
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
