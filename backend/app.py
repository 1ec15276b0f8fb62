"""`create_app`: the one place that wires the backend (database, Valkey, ingester, routes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from backend import db
from backend.clawback import ClawBacks, gateway_admin_url
from backend.http.auth import Tokens
from backend.http.envelope import envelope, request_id
from backend.http.routes import add_routes
from backend.http.state import (
    CLAIM_IDS,
    CLAW_BACKS,
    ENGINE,
    INGEST_HELPERS,
    INGESTER,
    METRICS,
    READER,
    REDIS,
    TOKENS,
)
from backend.ingest import Ingester, IngestOptions, settle_heap
from backend.ingest_helpers import HelperConfig, IngestHelpers
from backend.metrics import BackendMetrics
from gateway.codes import ClaimIds
from gateway.settings import Settings, data_key_bytes
from gateway.valkey.connect import connect

DEFAULT_INGEST = IngestOptions()


def create_app(
    settings: Settings,
    redis_url: str,
    database_url: str,
    ingest: IngestOptions | None = DEFAULT_INGEST,
    data_key: bytes | None = None,
) -> web.Application:
    """The backend app; `database_url` is an async SQLAlchemy URL (db.async_url); `data_key`
    the gateway's (`gateway.settings.resolve_data_key`), which turns claim ids into codes.
    Without one it takes the configured key, else the in-process default the gateway's
    create_app uses too (tests).

    With `ingest=None` it serves reports only (tests drive an Ingester themselves).
    """
    if data_key is None and settings.security.data_key:
        data_key = data_key_bytes(settings.security.data_key)
    app = web.Application(middlewares=[request_id, envelope])
    app[METRICS] = BackendMetrics()
    app[TOKENS] = Tokens(settings)
    app[CLAIM_IDS] = ClaimIds(data_key)

    async def database(app: web.Application) -> AsyncIterator[None]:
        engine = db.create_engine(database_url)
        await db.migrate(engine)
        app[ENGINE] = engine
        sqlite = database_url.startswith("sqlite")
        app[READER] = db.create_engine(database_url, writer=False) if sqlite else engine
        yield
        if app[READER] is not engine:
            await app[READER].dispose()
        await engine.dispose()

    async def valkey(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = connect(redis_url, settings.redis.timeout_s, max_connections=8)
        yield
        await app[REDIS].aclose()

    async def ingester(app: web.Application) -> AsyncIterator[None]:
        app[INGESTER] = Ingester(app[REDIS], app[ENGINE], app[METRICS], ingest or IngestOptions())
        task = asyncio.create_task(app[INGESTER].run()) if ingest is not None else None
        helpers = None
        if ingest is not None and settings.backend.ingest_workers > 1:
            config = HelperConfig(redis_url, settings.redis.timeout_s, database_url, ingest)
            helpers = IngestHelpers(settings.backend.ingest_workers - 1, config, app[METRICS])
            helpers.start()
        app[INGEST_HELPERS] = helpers
        settle_heap()
        yield
        if helpers is not None:
            await helpers.stop()
        if task is not None:
            app[INGESTER].stop()
            # wait_for cancels it if a commit hangs past the deadline.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 10)

    async def claw_backs(app: web.Application) -> AsyncIterator[None]:
        app[CLAW_BACKS] = ClawBacks(
            app[READER],
            app[REDIS],
            app[CLAIM_IDS],
            gateway_admin_url(settings),
            settings.redis.stream_max_len,
        )
        yield
        await app[CLAW_BACKS].close()

    app.cleanup_ctx.extend([database, valkey, ingester, claw_backs])
    add_routes(app)
    return app
