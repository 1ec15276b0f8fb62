"""Fixtures for the risk tests: the velocity library exposed op by op."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aredis

from risk import velocity_source

DISTINCT_OPS = velocity_source() + "\n" + (Path(__file__).parent / "distinct_ops.lua").read_text()

DistinctOp = Callable[..., Awaitable[list[int]]]


@pytest.fixture
def distinct(redis_client: aredis.Redis) -> DistinctOp:
    """Call distinct_ops.lua: `await distinct(op, key, member, window_ms, now_ms)`."""
    script = redis_client.register_script(DISTINCT_OPS)

    async def call(op: str, key: str, member: str, window_ms: int, now_ms: int) -> list[int]:
        return await script(keys=[key], args=[op, member, window_ms, now_ms])

    return call
