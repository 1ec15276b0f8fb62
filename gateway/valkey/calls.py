"""The edge between the gateway and Redis: timing, and 'Redis is down' as 503 unavailable."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    RedisClusterException,
    ResponseError,
    TimeoutError,
)

from gateway.errors import unavailable
from gateway.telemetry import metrics

T = TypeVar("T")
log = logging.getLogger("gateway.redis")

UNREACHABLE = (ConnectionError, TimeoutError, BusyLoadingError, RedisClusterException, OSError)


async def redis_call(name: str, call: Awaitable[T]) -> T:
    """Await one Redis call; unreachable Redis becomes ApiError 503, anything else surfaces."""
    started = time.perf_counter()
    try:
        result = await call
    except UNREACHABLE as exc:
        metrics.redis_errors.labels(name).inc()
        log.warning(
            "redis call failed", extra={"call": name, "error": f"{type(exc).__name__}: {exc}"}
        )
        raise unavailable() from exc
    metrics.redis_latency.labels(name).observe(time.perf_counter() - started)
    return result


def function_lost(error: ResponseError) -> bool:
    """The server does not hold the function called: it lost the library (restart, new node)."""
    # redis-py drops the "ERR " of the reply; the auto-pipeline keeps Valkey's text whole.
    return str(error).removeprefix("ERR ").startswith("Function not found")
