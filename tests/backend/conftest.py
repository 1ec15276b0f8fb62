"""Ledger fixtures: SQLite in a temp dir and a real PostgreSQL, as one parametrised fixture."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import db
from backend.app import create_app
from backend.ingest import Ingester, IngestOptions
from backend.metrics import BackendMetrics
from gateway.settings import Settings
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


@asynccontextmanager
async def backend_client(
    settings: Settings, valkey_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[TestClient[Any, Any]]:
    """The backend app on the test's ledger, served on a loopback port, without its ingest
    task (tests catch up themselves)."""
    url = db.async_url(database_url, tmp_path)
    client = TestClient(TestServer(create_app(settings, valkey_url, url, ingest=None)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


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
