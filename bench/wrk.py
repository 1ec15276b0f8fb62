"""Running wrk and reading its report."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench import debian

CLAIM_LUA = Path(__file__).with_name("claim.lua")
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkResult:
    """The figures of one wrk run that the benchmark uses."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse(text: str) -> WrkResult:
    """Parse `wrk --latency` output; raises ValueError when a figure is missing."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if not (done and rps and p50 and p99):
        raise ValueError(f"unexpected wrk output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return WrkResult(
        requests=int(done.group(1)),
        seconds=_ms(done.group(2), done.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def pinned(cpu: int, argv: list[str]) -> list[str]:
    """`argv` under `taskset -c cpu` when taskset exists (else unpinned)."""
    return ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") else argv


def command(url: str, seconds: float, connections: int, cap: int | None = None) -> list[str]:
    """wrk on CPU 1, one thread, fresh claims from claim.lua; `cap` stops it after N answers."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    argv += ["--timeout", "10s", "-s", str(CLAIM_LUA), url]
    return pinned(1, argv + (["--", str(cap)] if cap else []))


def run(url: str, seconds: float, connections: int) -> WrkResult:
    """One bounded wrk run; raises RuntimeError when wrk fails."""
    done = subprocess.run(
        command(url, seconds, connections),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse(done.stdout)


def ensure_installed() -> bool:
    """True when wrk is on PATH, installing it with apt-get when running as root."""
    return debian.ensure("wrk", lambda: shutil.which("wrk") is not None)
