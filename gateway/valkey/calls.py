"""The edge between the gateway and Redis: timing, and 'Redis is down' as 503 unavailable.

A call that failed before it could reach Valkey (no connection, or Valkey answered that it is
not ready: loading, a read-only replica, a cluster in transition) changed nothing. Any other
failure (a timeout, a connection lost with the call sent) may have been carried out: the 503
then says `Outcome-Unknown: true`, and the client retries with the same Idempotency-Key.
"""

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


class NotSent(ConnectionError):
    """The command never left this worker: no connection could be made."""


# Replies of a server that cannot serve the call now; it did not carry it out.
NOT_READY = ("LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "NOREPLICAS")
UNREACHABLE = (ConnectionError, TimeoutError, BusyLoadingError, RedisClusterException, OSError)


def not_ready(error: ResponseError) -> bool:
    """The reply says the server is not ready (loading, read-only, ...), not that the call erred."""
    return str(error).removeprefix("ERR ").startswith(NOT_READY)


def _unknown(error: Exception) -> bool:
    """May the call have reached Valkey and been carried out?"""
    if isinstance(error, NotSent | BusyLoadingError | ResponseError):
        return False
    # redis-py's connect failure reads "Error 111 connecting to host:port. ..."
    return not (isinstance(error, ConnectionError) and "connecting to" in str(error))


async def redis_call(name: str, call: Awaitable[T]) -> T:
    """Await one Redis call; unreachable or not-ready Redis becomes ApiError 503, anything
    else surfaces."""
    started = time.perf_counter()
    try:
        result = await call
    except (*UNREACHABLE, ResponseError) as exc:
        if isinstance(exc, ResponseError) and not (
            isinstance(exc, BusyLoadingError) or not_ready(exc)
        ):
            raise
        metrics.redis_errors.labels(name).inc()
        log.warning(
            "redis call failed", extra={"call": name, "error": f"{type(exc).__name__}: {exc}"}
        )
        raise unavailable(outcome_unknown=_unknown(exc)) from exc
    metrics.redis_latency.labels(name).observe(time.perf_counter() - started)
    return result


def function_lost(error: ResponseError) -> bool:
    """The server does not hold the function called: it lost the library (restart, new node)."""
    # redis-py drops the "ERR " of the reply; the auto-pipeline keeps Valkey's text whole.
    return str(error).removeprefix("ERR ").startswith("Function not found")
