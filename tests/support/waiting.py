"""Waiting for something to become true, and finding a gateway master's workers."""

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


def until_true(what: str, check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll `check` (a server not answering yet counts as false) until it holds, or raise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout_s}s")
