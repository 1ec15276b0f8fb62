"""Claims end to end against the real Valkey: grants, rejections, states, auth, events."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

from gateway.admin import campaigns
from gateway.valkey import keys
from tests.gateway.conftest import OTHER_KEY, Gateway


def iso(delta_s: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def grant_events(gw: Gateway, campaign_id: str) -> list[dict[bytes, bytes]]:
    entries = await gw.redis.xrange(keys.events(keys.shard_tag(campaign_id)))
    return [
        fields
        for _id, fields in entries
        if fields[b"type"] == b"claim.granted" and fields[b"campaign_id"] == campaign_id.encode()
    ]


async def test_grant_returns_claim_and_voucher_with_rfc3339_expiry(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(voucher_ttl_s=600)
    response = await gateway.claim(campaign, user_id="alice")
    assert response.status == 201
    body = await response.json()
    assert body["campaign_id"] == campaign and body["user_id"] == "alice"
    assert body["claim_id"].startswith("clm_")
    assert re.fullmatch(r"[0-9A-Z]{20}", body["voucher"]["code"])
    expires = datetime.fromisoformat(body["voucher"]["expires_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=590) < expires - datetime.now(UTC) < timedelta(seconds=610)
    assert response.headers["X-Request-Id"]


async def test_stock_runs_out_then_sold_out_and_stats_add_up(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=3)
    statuses = [(await gateway.claim(campaign)).status for _ in range(5)]
    assert statuses == [201, 201, 201, 409, 409]
    stats = await gateway.stats(campaign)
    assert (stats["stock_added"], stats["stock_left"], stats["granted"]) == (3, 0, 3)
    assert len(await grant_events(gateway, campaign)) == 3


async def test_sold_out_answers_with_envelope_matching_request_id_header(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=0)
    response = await gateway.claim(campaign)
    body = await response.json()
    assert response.status == 409
    assert body["error"]["code"] == "sold_out"
    assert body["error"]["request_id"] == response.headers["X-Request-Id"]


async def test_stock_added_after_sell_out_is_claimable_within_one_second(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=1)
    assert (await gateway.claim(campaign)).status == 201
    assert (await gateway.claim(campaign)).status == 409  # raises the local sold-out flag
    response = await gateway.admin_call("POST", f"/admin/campaigns/{campaign}/stock", {"add": 1})
    assert response.status == 200
    await asyncio.sleep(1.0)
    assert (await gateway.claim(campaign)).status == 201


async def test_negative_stock_change_clamps_at_zero(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=5)
    assert (await gateway.claim(campaign)).status == 201
    response = await gateway.admin_call("POST", f"/admin/campaigns/{campaign}/stock", {"add": -100})
    assert response.status == 200
    stats = await gateway.stats(campaign)
    assert stats["stock_left"] == 0
    assert stats["granted"] == stats["stock_added"] - stats["stock_left"] == 1


async def test_per_user_allowance_counts_across_clients(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=10, per_user_limit=2)
    assert (await gateway.claim(campaign, user_id="bob")).status == 201
    assert (await gateway.claim(campaign, user_id="bob", api_key=OTHER_KEY)).status == 201
    third = await gateway.claim(campaign, user_id="bob")
    assert third.status == 409
    assert (await third.json())["error"]["code"] == "limit_reached"


async def test_per_device_allowance(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=10, per_device_limit=1)
    assert (await gateway.claim(campaign, device_id="phone")).status == 201
    second = await gateway.claim(campaign, device_id="phone")
    assert second.status == 409
    assert (await second.json())["error"]["code"] == "limit_reached"
    assert (await gateway.claim(campaign, device_id="other-phone")).status == 201


async def test_allowances_are_campaign_fields_that_reads_leave_out(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=10, per_device_limit=2)
    assert (await gateway.claim(campaign, user_id="zoe", device_id="tab")).status == 201
    stored = await gateway.redis.hgetall(keys.campaign(keys.shard_tag(campaign), campaign))
    user, device = keys.allowance_field("u", "zoe"), keys.allowance_field("d", "tab")
    assert stored[user] == stored[device] == b"1"
    assert len(user) == len(device) == 9  # a digest, whatever the id's length
    # The admin reads every other field by name: the hash grows with claimants, and is never
    # read whole.
    assert {field.decode() for field in set(stored) - {user, device}} == set(campaigns.FIELDS)
    stats = await gateway.stats(campaign)
    assert (stats["granted"], stats["stock_left"], stats["redeemed"]) == (1, 9, 0)
    response = await gateway.admin_call("GET", f"/admin/campaigns/{campaign}")
    assert (await response.json())["stock_left"] == 9


async def expect_code(response: object, status: int, code: str) -> None:
    assert response.status == status  # type: ignore[attr-defined]
    assert (await response.json())["error"]["code"] == code  # type: ignore[attr-defined]


async def test_scheduled_and_ended_campaigns_are_not_active(gateway: Gateway) -> None:
    scheduled = await gateway.put_campaign(starts_at=iso(3600), ends_at=iso(7200))
    ended = await gateway.put_campaign(starts_at=iso(-7200), ends_at=iso(-3600))
    await expect_code(await gateway.claim(scheduled), 409, "campaign_not_active")
    await expect_code(await gateway.claim(ended), 409, "campaign_not_active")
    view = await gateway.public.get(
        f"/v1/campaigns/{scheduled}", headers={"Authorization": "Bearer test-key"}
    )
    assert (await view.json())["state"] == "scheduled"


async def test_paused_campaign_is_not_active_even_when_sold_out(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=1)
    assert (await gateway.claim(campaign)).status == 201
    await gateway.admin_call("POST", f"/admin/campaigns/{campaign}/pause")
    await asyncio.sleep(0.6)  # past the local sold-out flag (< 1 s by contract)
    await expect_code(await gateway.claim(campaign), 409, "campaign_not_active")
    await gateway.admin_call("POST", f"/admin/campaigns/{campaign}/resume")
    await gateway.admin_call("POST", f"/admin/campaigns/{campaign}/stock", {"add": 1})
    assert (await gateway.claim(campaign)).status == 201


async def test_unknown_campaign_is_404(gateway: Gateway) -> None:
    await expect_code(await gateway.claim("no-such-campaign"), 404, "campaign_not_found")


async def test_missing_or_unknown_api_key_is_401_and_changes_nothing(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=1)
    await expect_code(await gateway.claim(campaign, api_key="wrong"), 401, "unauthorized")
    response = await gateway.public.post(
        f"/v1/campaigns/{campaign}/claims",
        json={"user_id": "u", "device_id": "d"},
        headers={"Idempotency-Key": "k"},
    )
    await expect_code(response, 401, "unauthorized")
    assert (await gateway.stats(campaign))["stock_left"] == 1


async def test_admin_requires_token(gateway: Gateway) -> None:
    response = await gateway.admin.get("/admin/campaigns/x/stats")
    await expect_code(response, 401, "unauthorized")
    response = await gateway.admin.get(
        "/admin/campaigns/x/stats", headers={"Authorization": "Bearer nope"}
    )
    await expect_code(response, 401, "unauthorized")


async def test_campaign_view_reports_stock_and_state(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=4)
    response = await gateway.public.get(
        f"/v1/campaigns/{campaign}", headers={"Authorization": "Bearer test-key"}
    )
    body = await response.json()
    assert response.status == 200
    assert body == {
        "campaign_id": campaign,
        "state": "active",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
        "stock_left": 4,
    }


async def test_update_keeps_stock_and_changes_limits(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=5, per_user_limit=1)
    await gateway.put_campaign(campaign, stock=999, per_user_limit=2)
    stats = await gateway.stats(campaign)
    assert stats["stock_added"] == 5
    assert (await gateway.claim(campaign, user_id="carol")).status == 201
    assert (await gateway.claim(campaign, user_id="carol")).status == 201


async def test_rejections_are_counted_in_stats_and_events(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=1, per_user_limit=1)
    await gateway.claim(campaign, user_id="dave")
    await gateway.claim(campaign, user_id="dave")
    stats = await gateway.stats(campaign)
    assert stats["rejected"] == {"limit_reached": 1}
    entries = await gateway.redis.xrange(keys.events(keys.shard_tag(campaign)))
    rejected = [f for _i, f in entries if f[b"type"] == b"claim.rejected"]
    assert [f[b"code"] for f in rejected] == [b"limit_reached"]
    assert rejected[0][b"user_id"] == b"dave"
    for name in (b"ts", b"campaign_id", b"device_id", b"ip", b"request_id"):
        assert name in rejected[0]
