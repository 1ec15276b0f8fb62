"""Idempotency-Key semantics for claims (after Stripe and the IETF draft)."""

from __future__ import annotations

import asyncio

from gateway.valkey import keys
from tests.gateway.conftest import OTHER_KEY, Gateway


async def test_replay_returns_first_response_with_replayed_header(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=5)
    first = await gateway.claim(campaign, user_id="u1", device_id="d1", key="key-1")
    again = await gateway.claim(campaign, user_id="u1", device_id="d1", key="key-1")
    assert first.status == again.status == 201
    assert await first.json() == await again.json()
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await gateway.stats(campaign))["granted"] == 1


async def test_same_key_with_other_body_is_422(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=5)
    await gateway.claim(campaign, user_id="u1", device_id="d1", key="key-2")
    reused = await gateway.claim(campaign, user_id="u2", device_id="d1", key="key-2")
    assert reused.status == 422
    assert (await reused.json())["error"]["code"] == "idempotency_key_reused"
    assert (await gateway.stats(campaign))["granted"] == 1


async def test_keys_are_scoped_per_client(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=5, per_user_limit=5)
    first = await gateway.claim(campaign, user_id="u1", device_id="d1", key="shared")
    second = await gateway.claim(
        campaign, user_id="u1", device_id="d1", key="shared", api_key=OTHER_KEY
    )
    assert first.status == second.status == 201
    assert "Idempotent-Replayed" not in second.headers
    assert (await first.json())["claim_id"] != (await second.json())["claim_id"]


async def test_keys_are_scoped_per_campaign_even_in_one_shard(gateway: Gateway) -> None:
    first_id = "scope-a"
    second_id = next(
        c for i in range(5000) if keys.shard_tag(c := f"scope-{i}") == keys.shard_tag(first_id)
    )
    first = await gateway.claim(
        await gateway.put_campaign(first_id), user_id="u1", device_id="d1", key="per-campaign"
    )
    second = await gateway.claim(
        await gateway.put_campaign(second_id), user_id="u1", device_id="d1", key="per-campaign"
    )
    assert first.status == second.status == 201
    assert "Idempotent-Replayed" not in second.headers
    assert (await first.json())["voucher"]["code"] != (await second.json())["voucher"]["code"]


async def test_twenty_concurrent_requests_with_one_key_grant_once(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=50, per_user_limit=50)
    responses = await asyncio.gather(
        *(gateway.claim(campaign, user_id="racer", device_id="d", key="one-key") for _ in range(20))
    )
    statuses = [r.status for r in responses]
    assert set(statuses) <= {201, 409}
    bodies = [await r.json() for r in responses if r.status == 201]
    assert len({b["claim_id"] for b in bodies}) == 1
    for r in responses:
        if r.status == 409:
            assert (await r.json())["error"]["code"] == "request_in_progress"
    assert (await gateway.stats(campaign))["granted"] == 1


async def test_stored_rejection_replays_after_stock_returns(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=0)
    first = await gateway.claim(campaign, user_id="u", device_id="d", key="k-sold")
    await gateway.admin_call("POST", f"/admin/campaigns/{campaign}/stock", {"add": 5})
    await asyncio.sleep(0.6)
    again = await gateway.claim(campaign, user_id="u", device_id="d", key="k-sold")
    assert first.status == again.status == 409
    assert await first.json() == await again.json()
    assert again.headers["X-Request-Id"] == (await again.json())["error"]["request_id"]
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_retried_grant_replays_even_after_sell_out(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=1)
    first = await gateway.claim(campaign, user_id="u", device_id="d", key="k-win")
    assert (await gateway.claim(campaign)).status == 409  # sold-out flag now up
    again = await gateway.claim(campaign, user_id="u", device_id="d", key="k-win")
    assert again.status == 201
    assert await again.json() == await first.json()


async def test_unauthorised_attempt_is_not_stored(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=1)
    assert (await gateway.claim(campaign, key="k-auth", api_key="bad")).status == 401
    assert (await gateway.claim(campaign, key="k-auth")).status == 201
