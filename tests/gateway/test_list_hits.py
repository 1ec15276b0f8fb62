"""Block-list hits are answered in process yet still leave a risk.hit event (throttled)."""

from __future__ import annotations

import asyncio

from gateway.valkey import keys
from tests.gateway.conftest import Gateway


async def test_blocked_claim_leaves_one_risk_hit_event_per_identity_per_window(
    gateway: Gateway,
) -> None:
    campaign = await gateway.put_campaign(stock=5)
    response = await gateway.admin_call(
        "PUT", "/admin/risk/lists/blocked_users", {"add": ["mallory"]}
    )
    assert response.status == 200
    await asyncio.sleep(1.0)  # lists reach workers within 1 s
    for _ in range(3):
        denied = await gateway.claim(campaign, user_id="mallory")
        assert denied.status == 403
        assert (await denied.json())["error"]["code"] == "risk_denied"
    entries = await gateway.redis.xrange(keys.events(keys.shard_tag(campaign)))
    hits = [f for _id, f in entries if f[b"type"] == b"risk.hit"]
    assert len(hits) == 1  # throttled: a flood must not become a flood of writes
    assert hits[0][b"rules"] == b"blocked_users" and hits[0][b"decision"] == b"deny"
    assert hits[0][b"user_id"] == b"mallory"
    assert (await gateway.stats(campaign))["granted"] == 0
