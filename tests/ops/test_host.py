"""One gateway per port and data directory; the port keeps listening while workers come and go."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.served import config_text, free_port, serve
from tests.support.waiting import worker_pids

pytestmark = pytest.mark.slow


def gateway(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def wait_for(predicate, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def healthz(base: str) -> int:
    with urllib.request.urlopen(base + "/healthz", timeout=10) as response:
        return int(response.status)


def test_a_taken_port_fails_with_the_address_and_the_cause(tmp_path: Path, valkey_url: str):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "gateway.toml"
        config.write_text(config_text(valkey_url, port, free_port(), workers=1))
        started = time.monotonic()
        result = gateway("serve", "--config", str(config), cwd=tmp_path)
        elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 10, elapsed  # a bound, not a benchmark: it must not wait for readiness


def test_a_second_gateway_on_the_same_port_is_refused(tmp_path: Path, valkey_url: str):
    with serve(tmp_path, valkey_url, workers=1) as first:
        port = int(first.public.rsplit(":", 1)[1])
        other = tmp_path / "other"
        other.mkdir()
        config = other / "gateway.toml"
        config.write_text(config_text(valkey_url, port, free_port(), workers=1))
        result = gateway("serve", "--config", str(config), cwd=other)
        assert result.returncode == 2
        assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
        assert healthz(first.public) == 200  # the first one still serves its port alone


def keyless_config(valkey_url: str) -> str:
    """A config without a data key: the gateway generates one into its data directory."""
    text = config_text(valkey_url, free_port(), free_port(), workers=1)
    return text.replace('data_key = "' + "A" * 43 + '="', "")


def test_a_second_gateway_on_the_same_data_directory_is_refused(tmp_path: Path, valkey_url: str):
    (tmp_path / "first.toml").write_text(keyless_config(valkey_url))
    (tmp_path / "second.toml").write_text(keyless_config(valkey_url))
    first = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", "first.toml"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = tmp_path / "var" / "gateway.lock"
        wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid))
        result = gateway("serve", "--config", "second.toml", cwd=tmp_path)
        assert result.returncode == 2
        assert f"is in use by another gateway (pid {first.pid})" in result.stderr
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(20) == 0


def test_a_killed_worker_leaves_the_port_listening(tmp_path: Path, valkey_url: str):
    with serve(tmp_path, valkey_url, workers=1) as served:
        (worker,) = worker_pids(served.process.pid)
        os.kill(worker, signal.SIGKILL)
        # No worker now: the master's socket still takes the connection, and the
        # replacement answers it.
        assert healthz(served.public) == 200
        assert worker_pids(served.process.pid) - {worker}


def test_sighup_replaces_every_worker_and_refuses_no_connection(tmp_path: Path, valkey_url: str):
    with serve(tmp_path, valkey_url, workers=2) as served:
        before = worker_pids(served.process.pid)
        assert len(before) == 2
        served.process.send_signal(signal.SIGHUP)
        answers = []
        deadline = time.monotonic() + 60
        while worker_pids(served.process.pid) & before or len(worker_pids(served.process.pid)) != 2:
            answers.append(healthz(served.public))  # a refused connection would raise here
            assert time.monotonic() < deadline, "workers not replaced in time"
        assert worker_pids(served.process.pid).isdisjoint(before)
        assert answers and set(answers) == {200}
        wait_for(lambda: "workers replaced" in served.log())
