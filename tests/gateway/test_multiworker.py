"""No oversell under real concurrency across worker processes; graceful SIGTERM."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import aiohttp

from gateway.valkey import keys
from tests.support.served import ADMIN_TOKEN, API_KEY, scrape_until, serve

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def create_campaign(
    session: aiohttp.ClientSession, admin: str, campaign_id: str, stock: int
) -> None:
    body = {
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
        "stock": stock,
        "per_user_limit": 1,
        "benefit": {"kind": "voucher"},
    }
    async with session.put(
        f"{admin}/admin/campaigns/{campaign_id}", json=body, headers=ADMIN
    ) as response:
        assert response.status == 201


async def fire_claims(public: str, campaign_id: str, n: int) -> list[tuple[int, Any]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)  # a retry never meets a stale one
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> tuple[int, Any]:
            # A connection the server closed (a client too slow to send its body within
            # body_timeout_s on a loaded machine) is retried with the same Idempotency-Key, as
            # a client must: the retry may only replay, never grant twice.
            for attempt in range(3):
                try:
                    async with session.post(
                        f"{public}/v1/campaigns/{campaign_id}/claims",
                        json={"user_id": f"user-{i}", "device_id": f"device-{i}"},
                        headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": f"k-{i}"},
                    ) as response:
                        return response.status, await response.json()
                except aiohttp.ClientConnectionError:
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

        return await asyncio.gather(*(one(i) for i in range(n)))


async def test_two_thousand_concurrent_claims_on_two_workers_grant_exactly_the_stock(
    tmp_path: Path, valkey_url: str, redis_client: Any
) -> None:
    with serve(tmp_path, valkey_url, workers=2) as served:
        async with aiohttp.ClientSession() as session:
            await create_campaign(session, served.admin, "flash", 200)
        results = await fire_claims(served.public, "flash", 2000)
        statuses = collections.Counter(status for status, _ in results)
        assert statuses[201] == 200, statuses
        assert statuses[409] == 1800, statuses
        assert all(body["error"]["code"] == "sold_out" for s, body in results if s == 409)
        assert len({body["voucher"]["code"] for s, body in results if s == 201}) == 200
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{served.admin}/admin/campaigns/flash/stats", headers=ADMIN) as response,
        ):
            stats = await response.json()
        assert (stats["stock_left"], stats["granted"], stats["stock_added"]) == (0, 200, 200)
        entries = await redis_client.xrange(keys.events(keys.shard_tag("flash")))
        grants = [f for _id, f in entries if f[b"type"] == b"claim.granted"]
        assert len(grants) == 200
        # Both workers really served: the aggregated metrics count every answer.
        sample = 'gateway_claims_total{result="granted"} 200.0'
        async with aiohttp.ClientSession() as session:
            text = await scrape_until(session, f"{served.public}/metrics", sample)
        assert sample in text
