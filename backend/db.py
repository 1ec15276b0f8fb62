"""The ledger database: an async engine for SQLite (WAL, aiosqlite) or PostgreSQL (asyncpg),
migrated to the newest schema on start."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any number that is ours: two backends starting at once on one PostgreSQL migrate in turn.
_MIGRATION_LOCK = 0x6C656467


def async_url(database_url: str, data_dir: str | Path) -> str:
    """The SQLAlchemy URL for `backend.database_url`; a relative sqlite path is under data_dir."""
    if database_url.startswith("sqlite:///"):
        path = Path(database_url.removeprefix("sqlite:///"))
        if not path.is_absolute():
            path = Path(data_dir).resolve() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{path}"
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+asyncpg://" + database_url.removeprefix(prefix)
    raise ValueError(f"backend.database_url: unsupported {database_url!r}")


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets reports read while ingest writes; the driver's own transaction handling is
    # switched off so that `_sqlite_begin` can take the write lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # BEGIN IMMEDIATE: two ingesters on one file queue for the lock (busy_timeout) instead of
    # failing when a read transaction tries to become a write.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str, writer: bool = True) -> AsyncEngine:
    """An engine for an async URL from `async_url`.

    On SQLite a reader (`writer=False`, for reports) runs each query on its own WAL snapshot
    and never takes the write lock, so reports never hold up ingest.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=4, max_overflow=4)
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        if writer:
            event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_size=8, max_overflow=4, pool_pre_ping=True)


@contextlib.asynccontextmanager
async def write_turn(engine: AsyncEngine) -> AsyncIterator[None]:
    """This process's turn to write a SQLite ledger (a no-op on PostgreSQL).

    Ingesters in several processes queue on an flock of a file beside the database: the one
    waiting is woken the moment the writer before it is done. Left to SQLite alone they would
    queue in its busy handler, which sleeps and polls (up to 100 ms a sleep) and leaves the
    database idle between commits.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    fd = os.open(f"{database}.write-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration (idempotent, safe to race on PostgreSQL)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def ping(engine: AsyncEngine) -> bool:
    """Whether the database answers a trivial query now."""
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:  # any driver or network error means "not reachable"
        return False
    return True
