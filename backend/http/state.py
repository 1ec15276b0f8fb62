"""The app's typed state keys."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.clawback import ClawBacks
from backend.http.auth import Tokens
from backend.ingest import Ingester
from backend.ingest_helpers import IngestHelpers
from backend.metrics import BackendMetrics
from gateway.codes import ClaimIds

ENGINE = web.AppKey("engine", AsyncEngine)  # ingest writes
READER = web.AppKey("reader", AsyncEngine)  # reports read (the same engine on PostgreSQL)
REDIS: web.AppKey[Any] = web.AppKey("redis")
INGESTER = web.AppKey("ingester", Ingester)
# More ingesters in processes of their own (backend.ingest_workers > 1), else None.
INGEST_HELPERS: web.AppKey[IngestHelpers | None] = web.AppKey("ingest_helpers")
METRICS = web.AppKey("metrics", BackendMetrics)
TOKENS = web.AppKey("tokens", Tokens)
CLAIM_IDS = web.AppKey("claim_ids", ClaimIds)  # claim ids to codes and back (the data key's)
CLAW_BACKS = web.AppKey("claw_backs", ClawBacks)
