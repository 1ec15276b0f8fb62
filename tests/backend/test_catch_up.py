"""Backend stopped while the gateway produces 50,000 events; started, it catches up exactly.

The events are produced once and caught up by two backends at once, one on SQLite (group
`ledger`) and one on PostgreSQL (group `ledger-pg`): each has its own consumer group, and a
stream is trimmed only below what every group has committed.
"""

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
from backend.streams import ensure_group
from gateway.valkey import keys
from tests.backend.conftest import fresh_postgres_url
from tests.backend.postgres import PostgresServer
from tests.gateway.conftest import ADMIN_TOKEN, Gateway

CAMPAIGNS, STOCK, CLAIMS = 5, 4_000, 10_000  # per campaign: 4,000 grants, 6,000 limit_reached
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FIELDS = ("stock_added", "stock_left", "granted", "redeemed")


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
async def backends(
    gateway: Gateway, valkey_url: str, postgres: PostgresServer, tmp_path: Path
) -> AsyncIterator[Any]:
    """Starts the SQLite and the PostgreSQL backend when called; closes them after the test."""
    started: list[TestClient[Any, Any]] = []

    async def start() -> list[TestClient[Any, Any]]:
        ledgers = [
            (f"sqlite:///{tmp_path / 'ledger.db'}", "ledger"),
            (await fresh_postgres_url(postgres), "ledger-pg"),
        ]
        for database_url, group in ledgers:
            options = IngestOptions(group=group, discover_every_s=0.2, idle_sleep_s=0.05)
            app = create_app(
                gateway.settings, valkey_url, async_url(database_url, tmp_path), options
            )
            client = TestClient(TestServer(app))
            await client.start_server()
            started.append(client)
        return started

    yield start
    for client in started:
        await client.close()


async def _caught_up(client: Any, ids: list[str]) -> None:
    """Poll the reports until every campaign shows all its events (404 until the first).

    Generous: on a shared 2-core machine catching up takes from under a minute to several.
    """
    last: dict[str, Any] = {}
    try:
        async with asyncio.timeout(300):
            for campaign_id in ids:
                while True:
                    response = await client.get(f"/reports/campaigns/{campaign_id}", headers=AUTH)
                    last = {"status": response.status, "body": await response.json()}
                    report = last["body"]
                    if response.status == 200 and (
                        report["funnel"]["granted"] + sum(report["rejected"].values()) == CLAIMS
                    ):
                        break
                    await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(f"not caught up; last answer: {last}") from None


async def _check(client: Any, gateway: Gateway, campaign_id: str) -> None:
    stats = await gateway.stats(campaign_id)
    response = await client.get(f"/reports/campaigns/{campaign_id}", headers=AUTH)
    report = await response.json()
    assert {k: report["funnel"][k] for k in FIELDS} == {k: stats[k] for k in FIELDS}
    assert report["rejected"] == stats["rejected"] == {"limit_reached": CLAIMS - STOCK}
    assert sum(c["granted"] for c in report["by_client"].values()) == STOCK


@pytest.mark.slow
@pytest.mark.timeout(540)
async def test_restarted_backends_catch_up_and_every_count_equals_the_gateway_stats(
    gateway: Gateway, backends: Any
) -> None:
    ids = await produce(gateway)
    # Both backends ran before they were stopped: their groups exist on every stream. (A
    # group created later starts at whatever the other group has left untrimmed.)
    for stream in await gateway.redis.smembers(keys.EVENT_STREAMS):
        for group in ("ledger", "ledger-pg"):
            await ensure_group(gateway.redis, stream.decode(), group)
    clients = await backends()
    await asyncio.gather(*[_caught_up(client, ids) for client in clients])
    for client in clients:
        for campaign_id in ids:
            await _check(client, gateway, campaign_id)
    # Both groups committed everything, so the streams were trimmed to nothing.
    streams = sorted(s.decode() for s in await gateway.redis.smembers(keys.EVENT_STREAMS))
    await asyncio.sleep(1.5)  # the next status pass (trim once a second per idle stream)
    assert [await gateway.redis.xlen(s) for s in streams] == [0] * len(streams)
