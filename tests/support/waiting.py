"""Waiting for something to become true, and finding a process's children."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis


async def eventually(probe: Callable[[], Any], within_s: float = 1.0, step: float = 0.01) -> Any:
    """Poll `probe` (plain or async) until it returns something truthy; return that value.

    Fails the test after `within_s`. For propagation and recovery, never to cross a window:
    windows are crossed with injected clocks.
    """
    deadline = time.monotonic() + within_s
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s} s")
        await asyncio.sleep(step)


def child_pids(parent: int, marker: bytes) -> set[int]:
    """The parent's child processes whose command line holds `marker`."""
    children: set[int] = set()
    for task in Path(f"/proc/{parent}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            children |= {int(p) for p in (task / "children").read_text().split()}
    found = set()
    for pid in children:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(pid)
    return found


def worker_pids(master: int) -> set[int]:
    """The master's worker processes (multiprocessing 'spawn' children, not its helpers)."""
    return child_pids(master, b"spawn_main")


def exited(pid: int) -> bool:
    """Whether the process is gone (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def until_true(what: str, check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll `check` (a server not answering yet counts as false) until it holds, or raise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout_s}s")
