"""Backend stopped while the gateway produces 50,000 events; started, it catches up exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from backend.app import create_app
from backend.db import async_url
from backend.ingest import IngestOptions
from gateway.valkey import keys
from tests.gateway.conftest import ADMIN_TOKEN, Gateway

CAMPAIGNS, STOCK, CLAIMS = 5, 4_000, 10_000  # per campaign: 4,000 grants, 6,000 limit_reached
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def produce(gateway: Gateway) -> list[str]:
    """50,000 claim events from real claims, in concurrent batches of 500."""
    ids = [await gateway.put_campaign(stock=STOCK) for _ in range(CAMPAIGNS)]
    for campaign_id in ids:
        for start in range(0, CLAIMS, 500):
            # Users repeat past STOCK: their second claim is limit_reached (an event).
            users = [f"u{i % STOCK}" for i in range(start, start + 500)]
            answers = await asyncio.gather(*[gateway.claim(campaign_id, user_id=u) for u in users])
            for answer in answers:
                answer.release()
    return ids


@pytest.fixture
async def backend_client(
    gateway: Gateway, valkey_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[Any]:
    async def start() -> TestClient[Any, Any]:
        app = create_app(
            gateway.settings,
            valkey_url,
            async_url(database_url, tmp_path),
            IngestOptions(discover_every_s=0.2, idle_sleep_s=0.05),
        )
        client = TestClient(TestServer(app))
        await client.start_server()
        started.append(client)
        return client

    started: list[TestClient[Any, Any]] = []
    yield start
    for client in started:
        await client.close()


async def _report(client: Any, campaign_id: str) -> dict[str, Any]:
    response = await client.get(f"/reports/campaigns/{campaign_id}", headers=AUTH)
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def _caught_up(client: Any, ids: list[str]) -> None:
    """Poll the reports until every campaign shows all its events (404 until the first)."""
    async with asyncio.timeout(120):
        for campaign_id in ids:
            while True:
                response = await client.get(f"/reports/campaigns/{campaign_id}", headers=AUTH)
                report = await response.json()
                if response.status == 200 and (
                    report["funnel"]["granted"] + sum(report["rejected"].values()) == CLAIMS
                ):
                    break
                await asyncio.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_restarted_backend_catches_up_and_every_count_equals_the_gateway_stats(
    gateway: Gateway, backend_client: Any
) -> None:
    ids = await produce(gateway)
    client = await backend_client()
    await _caught_up(client, ids)
    for campaign_id in ids:
        stats = await gateway.stats(campaign_id)
        report = await _report(client, campaign_id)
        funnel = report["funnel"]
        assert {k: funnel[k] for k in ("stock_added", "stock_left", "granted", "redeemed")} == {
            k: stats[k] for k in ("stock_added", "stock_left", "granted", "redeemed")
        }
        assert report["rejected"] == stats["rejected"] == {"limit_reached": CLAIMS - STOCK}
        assert sum(c["granted"] for c in report["by_client"].values()) == STOCK
    # Everything committed, so the streams were trimmed to nothing.
    streams = {s.decode() for s in await gateway.redis.smembers(keys.EVENT_STREAMS)}
    await asyncio.sleep(1.2)  # the next status pass (trim once a second per idle stream)
    assert [await gateway.redis.xlen(s) for s in sorted(streams)] == [0] * len(streams)
