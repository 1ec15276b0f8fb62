"""Run the real `gateway serve` (N worker processes) as a subprocess for black-box tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ADMIN_TOKEN = "served-admin-token"
API_KEY = "served-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    public: str
    admin: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def config_text(redis_url: str, port: int, admin_port: int, workers: int, extra: str = "") -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}
admin_port = {admin_port}
workers = {workers}
keepalive_timeout_s = 2.0
body_timeout_s = 2.0
shutdown_timeout_s = 5.0

[redis]
url = "{redis_url}"
timeout_s = 0.5

[admin]
token = "{ADMIN_TOKEN}"

[security]
data_key = "{"A" * 43}="

[[clients]]
id = "app"
api_key = "{API_KEY}"
{extra}
"""


def wait_ready(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url + "/readyz", timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"gateway at {url} not ready within {timeout_s}s")


@contextlib.contextmanager
def serve(
    tmp_path: Path, redis_url: str, workers: int = 2, extra: str = "", wait: bool = True
) -> Iterator[Served]:
    """Start `gateway serve`; on exit SIGTERM it and require a clean (exit 0) shutdown."""
    port, admin_port = free_port(), free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(config_text(redis_url, port, admin_port, workers, extra))
    log_path = tmp_path / "gateway.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    served = Served(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", process, log_path)
    try:
        if wait:
            wait_ready(served.public)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
                raise AssertionError("gateway did not stop within 20 s of SIGTERM") from None
        assert process.returncode == 0, f"gateway exited {process.returncode}\n{served.log()}"


async def scrape_until(session: aiohttp.ClientSession, url: str, sample: str) -> str:
    """The /metrics text once it shows `sample`, else the last scrape.

    Each worker hands its counts to the shared metric files every second, so a scrape right
    after the requests may still miss another worker's share.
    """
    text = ""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        async with session.get(url) as response:
            text = await response.text()
        if sample in text:
            break
        await asyncio.sleep(0.2)
    return text
