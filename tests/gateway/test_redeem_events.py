"""Every event a redemption writes names its voucher by claim id, never by the code in clear."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway import codes
from gateway.valkey import keys
from tests.gateway.conftest import Gateway
from tests.gateway.test_redemptions import RECHARGE, knobs, recharge_nobody_delivers
from tests.gateway.test_voucher_record import claim_id_of

LOCKOUT = """
[[risk.rules]]
id = "guessing_device"
kind = "failed_redemptions_per_device"
threshold = 2
window_s = 60
decision = "deny"
mode = "enforce"
"""
MALFORMED = "GUESS0000000000000000"  # fails its check characters


async def events(gw: Gateway, tag: str, *types: str) -> list[dict[str, str]]:
    entries = await gw.redis.xrange(keys.events(tag))
    decoded = [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in entries]
    return [e for e in decoded if e["type"] in types]


def assert_names_voucher(gw: Gateway, event: dict[str, str], code: str) -> None:
    assert event["claim_id"] == claim_id_of(gw, code), event
    assert event["voucher_code"] == codes.mask_code(code), event
    assert code not in event.values()


async def test_delivered_redemption_event_carries_the_claim_id(redeem_gateway: Gateway) -> None:
    gw = redeem_gateway
    code = await gw.grant(await gw.put_campaign())
    assert (await gw.redeem(code)).status == 200
    (delivered,) = await events(gw, codes.code_tag(code), "redemption.delivered")
    assert_names_voucher(gw, delivered, code)


async def test_pending_then_settled_events_carry_the_claim_id(redeem_gateway: Gateway) -> None:
    gw = redeem_gateway
    await knobs(gw, "alpha", processing_s=0.5)
    code = await gw.grant(await gw.put_campaign(**RECHARGE))
    response = await gw.redeem(code, account="acct")
    assert response.status == 202, await response.text()
    tag = codes.code_tag(code)
    for _ in range(50):  # the reconciler settles it
        delivered = await events(gw, tag, "redemption.delivered")
        if delivered:
            break
        await asyncio.sleep(0.1)
    (reserved,) = await events(gw, tag, "redemption.reserved")
    assert [e["redemption_id"] for e in (reserved, *delivered)] == [
        (await response.json())["redemption_id"]
    ] * 2
    for event in (reserved, *delivered):
        assert_names_voucher(gw, event, code)


async def test_refused_and_failed_redemption_events_carry_the_claim_id(
    redeem_gateway: Gateway,
) -> None:
    gw = redeem_gateway
    code = await gw.grant(await gw.put_campaign())
    assert (await gw.redeem(code)).status == 200
    assert (await gw.redeem(code)).status == 409
    (rejected,) = await events(gw, codes.code_tag(code), "redemption.rejected")
    assert rejected["code"] == "voucher_redeemed"
    assert_names_voucher(gw, rejected, code)

    unlucky = await gw.grant(await recharge_nobody_delivers(gw), user_id="u2")
    assert (await gw.redeem(unlucky, user_id="u2", account="acct")).status == 503
    (failed,) = await events(gw, codes.code_tag(unlucky), "redemption.failed")
    assert failed["code"] == "suppliers_unavailable"
    assert_names_voucher(gw, failed, unlucky)


async def test_a_lockout_names_the_code_tried_by_claim_id(gateway_factory: Any) -> None:
    async with gateway_factory(LOCKOUT) as gw:
        code = await gw.grant(await gw.put_campaign())
        assert [(await gw.redeem(MALFORMED, device_id="rig")).status for _ in range(2)] == [404] * 2
        assert (await gw.redeem(code, device_id="rig")).status == 429
        (hit,) = await events(gw, keys.GUARD_TAG, "risk.hit")
        assert hit["claim_id"] == claim_id_of(gw, code) and code not in hit.values()


def test_keys_scripts_complete_from_an_id_are_the_key_tables_keys() -> None:
    """redeem.lua and redeem_settle.lua append a campaign id they learn to these prefixes."""
    tag, campaign = "AB", "spring-sale"
    assert keys.campaign(tag, "") + campaign == keys.campaign(tag, campaign)
    assert keys.card_pool(tag, "") + campaign == keys.card_pool(tag, campaign)
