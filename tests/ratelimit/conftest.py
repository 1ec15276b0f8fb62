"""Fixtures for the sliding-window tests: the library script exposed op by op."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aredis

from ratelimit import load_lua, sliding_window_source

SW_OPS = sliding_window_source() + "\n" + (Path(__file__).parent / "sw_ops.lua").read_text()
FW_OPS = (
    load_lua("ratelimit", "field_window.lua")
    + "\n"
    + (Path(__file__).parent / "fw_ops.lua").read_text()
)

SwOp = Callable[..., Awaitable[list[int]]]


@pytest.fixture
def sw(redis_client: aredis.Redis) -> SwOp:
    """Call sw_ops.lua: `await sw(op, key, limit, window_ms, now_ms[, trim_at])`."""
    script = redis_client.register_script(SW_OPS)

    async def call(
        op: str, key: str, limit: int, window_ms: int, now_ms: int, trim_at: int | None = None
    ) -> list[int]:
        args = [op, limit, window_ms, now_ms, "" if trim_at is None else trim_at]
        return await script(keys=[key], args=args)

    return call
