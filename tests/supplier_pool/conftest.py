"""Fixtures: a real supplier simulator on loopback, a helper to drive it, a fake clock."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from supplier_pool.breaker import BreakerConfig
from supplier_pool.pool import SupplierPool, SupplierSpec
from supplier_pool.simulator import running_simulator
from tests.supplier_pool.helpers import FakeClock, Sim


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async with (
        running_simulator(suppliers=("alpha", "beta", "gamma"), seed=7) as base,
        aiohttp.ClientSession() as http,
    ):
        yield Sim(base, http)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_pool() -> AsyncIterator[Callable[..., SupplierPool]]:
    """Build pools that are closed when the test ends."""
    pools: list[SupplierPool] = []

    def build(specs: list[SupplierSpec], **kwargs: Any) -> SupplierPool:
        kwargs.setdefault("breaker_config", BreakerConfig())
        pool = SupplierPool(specs, **kwargs)
        pools.append(pool)
        return pool

    yield build
    for pool in pools:
        await pool.close()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback address where nothing listens: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}/s/nobody"
