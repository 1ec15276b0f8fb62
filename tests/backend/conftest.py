"""Ledger fixtures: SQLite in a temp dir and a real PostgreSQL, as one parametrised fixture."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import db
from backend.ingest import Ingester, IngestOptions
from backend.metrics import BackendMetrics
from tests.backend.postgres import PostgresServer
from tests.gateway.conftest import Gateway, start_gateway

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.remove()


async def fresh_postgres_url(server: PostgresServer) -> str:
    name = f"ledger_{next(_databases)}"
    connection = await asyncpg.connect(server.url())
    try:
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()
    return server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: Any, tmp_path: Path) -> str:
    """`backend.database_url` of an empty ledger: SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return await fresh_postgres_url(request.getfixturevalue("postgres"))


@pytest.fixture
async def engine(database_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on the ledger."""
    built = db.create_engine(db.async_url(database_url, tmp_path))
    await db.migrate(built)
    try:
        yield built
    finally:
        await built.dispose()


def ingester(redis: Any, engine: AsyncEngine, **options: Any) -> Ingester:
    """An ingester with test-friendly timings (discovery every pass, fast takeover)."""
    defaults: dict[str, Any] = {"discover_every_s": 0.0, "claim_idle_ms": 30_000}
    return Ingester(redis, engine, BackendMetrics(), IngestOptions(**(defaults | options)))


@pytest.fixture
async def gateway(valkey_url: str, redis_client: Any) -> AsyncIterator[Gateway]:
    """An in-process gateway (public + admin app) on the flushed session Valkey."""
    async for gw in start_gateway(valkey_url):
        gw.redis = redis_client
        yield gw


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Poll `check` until it holds (fails the test with TimeoutError after timeout_s)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)
