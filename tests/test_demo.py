"""`make run`'s demo: it prints ready-to-paste curl commands and the first one returns 201."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def read_until_examples(process: subprocess.Popen[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        lines.append(line)
        if line.startswith(".venv/bin/gateway events tail"):
            return "".join(lines)
    raise AssertionError("demo printed no examples:\n" + "".join(lines))


@pytest.mark.skipif(shutil.which("curl") is None, reason="the printed examples use curl")
def test_demo_prints_curl_commands_and_the_first_claim_returns_201(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--config", str(ROOT / "config/demo.toml")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        text = read_until_examples(process, timeout_s=60)
        first = re.search(r"^# 1\..*?\n(curl .*?)\n\n", text, re.S | re.M)
        assert first, text
        command = first.group(1).replace("\\\n", " ")
        result = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=20, check=False
        )
        assert result.stdout.startswith("HTTP/1.1 201"), result.stdout
        again = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=20, check=False
        )
        assert again.stdout.startswith("HTTP/1.1 201")
        assert "idempotent-replayed: true" in again.stdout.lower()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        assert process.stdout is not None
        process.stdout.close()
        assert code == 0
