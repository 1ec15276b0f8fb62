"""PostgreSQL stopped under a running backend: ingest pauses unacked, /readyz says so, and
nothing is lost when the database returns."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from backend.app import create_app
from backend.db import async_url
from backend.http.state import INGESTER
from backend.ingest import IngestOptions
from gateway.valkey import keys
from tests.backend.conftest import fresh_postgres_url
from tests.backend.postgres import PostgresServer
from tests.gateway.conftest import ADMIN_TOKEN, Gateway
from tests.support.waiting import eventually

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def _granted(client: Any, campaign_id: str) -> int:
    response = await client.get(f"/reports/campaigns/{campaign_id}", headers=AUTH)
    return int((await response.json())["funnel"]["granted"]) if response.status == 200 else 0


async def _granted_at_least(client: Any, campaign_id: str, n: int) -> bool:
    return await _granted(client, campaign_id) >= n


async def _paused(ingester: Any) -> bool:
    return not ingester.database_ok


async def _claims(gateway: Gateway, campaign_id: str, users: range) -> None:
    await asyncio.gather(*[gateway.claim(campaign_id, user_id=f"u{i}") for i in users])


@pytest.mark.timeout(120)
async def test_a_database_outage_pauses_ingest_and_loses_nothing(
    gateway: Gateway, valkey_url: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    database = async_url(await fresh_postgres_url(postgres), tmp_path)
    options = IngestOptions(discover_every_s=0.1, idle_sleep_s=0.05, retry_after_s=0.2)
    client = TestClient(TestServer(create_app(gateway.settings, valkey_url, database, options)))
    await client.start_server()
    try:
        campaign_id = await gateway.put_campaign(stock=500)
        stream = keys.events(keys.shard_tag(campaign_id))
        await _claims(gateway, campaign_id, range(100))
        await eventually(lambda: _granted_at_least(client, campaign_id, 100), within_s=30, step=0.1)
        postgres.stop()
        try:
            await _claims(gateway, campaign_id, range(100, 400))
            ingester = client.app[INGESTER]
            await eventually(lambda: _paused(ingester), within_s=30, step=0.1)
            ready = await client.get("/readyz")
            assert ready.status == 503
            assert (await ready.json())["error"]["code"] == "unavailable"
            # Nothing acked past the commit: the outage's entries are still in the stream.
            info = {i["name"].decode(): i for i in await gateway.redis.xinfo_groups(stream)}
            assert info["ledger"]["pending"] + info["ledger"]["lag"] > 0
        finally:
            postgres.start()
        await eventually(lambda: _granted_at_least(client, campaign_id, 400), within_s=30, step=0.1)
        assert (await client.get("/readyz")).status == 200
        stats = await gateway.stats(campaign_id)
        response = await client.get(f"/reports/campaigns/{campaign_id}", headers=AUTH)
        report = await response.json()
        assert report["funnel"]["granted"] == stats["granted"] == 400
        assert report["rejected"] == stats["rejected"]
    finally:
        await client.close()
