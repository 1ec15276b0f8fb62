"""Redemptions end to end: every outcome of SPEC 3.2, against Valkey and the simulator."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.gateway.conftest import OTHER_KEY, Gateway

RECHARGE = {
    "benefit": {"kind": "direct_recharge", "sku": "topup-10", "suppliers": ["alpha", "beta"]}
}


async def knobs(gw: Gateway, supplier: str, **values: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            f"{gw.simulator}/_sim/suppliers/{supplier}",
            json=values,  # type: ignore[attr-defined]
        ) as response,
    ):
        assert response.status == 200, await response.text()


async def sim_orders(gw: Gateway) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{gw.simulator}/_sim/orders"  # type: ignore[attr-defined]
        ) as response,
    ):
        body = await response.json()
    return list(body["orders"] if isinstance(body, dict) else body)


async def recharge_nobody_delivers(gw: Gateway) -> str:
    """A direct-recharge campaign whose two suppliers both refuse every order."""
    await knobs(gw, "alpha", failure_rate=1.0)
    await knobs(gw, "beta", failure_rate=1.0)
    return await gw.put_campaign(**RECHARGE)


async def error_code(response: Any) -> str:
    return str((await response.json())["error"]["code"])


async def test_merchant_voucher_is_delivered_at_once(redeem_gateway: Gateway) -> None:
    gw = redeem_gateway
    campaign = await gw.put_campaign()
    code = await gw.grant(campaign)
    response = await gw.redeem(code)
    body = await response.json()
    assert response.status == 200
    assert body["status"] == "delivered" and body["voucher_code"] == code
    assert body["delivery"] == {"kind": "voucher"}
    assert body["redemption_id"].startswith("rdm_")
    assert (await gw.stats(campaign))["redeemed"] == 1


async def test_direct_recharge_goes_through_the_first_supplier(redeem_gateway: Gateway) -> None:
    gw = redeem_gateway
    campaign = await gw.put_campaign(**RECHARGE)
    code = await gw.grant(campaign)
    response = await gw.redeem(code, account="+4915112345678")
    body = await response.json()
    assert response.status == 200, body
    assert body["delivery"]["kind"] == "direct_recharge"
    assert body["delivery"]["supplier"] == "alpha" and body["delivery"]["supplier_ref"]
    orders = await sim_orders(gw)
    assert [(o["supplier"], o["status"]) for o in orders] == [("alpha", "success")]
    assert orders[0]["order_id"] == body["redemption_id"]


async def test_failover_to_the_next_supplier_on_failed(redeem_gateway: Gateway) -> None:
    gw = redeem_gateway
    await knobs(gw, "alpha", failure_rate=1.0)
    campaign = await gw.put_campaign(**RECHARGE)
    code = await gw.grant(campaign)
    response = await gw.redeem(code, account="acct-1")
    assert response.status == 200
    assert (await response.json())["delivery"]["supplier"] == "beta"


async def test_account_is_required_for_direct_recharge(redeem_gateway: Gateway) -> None:
    gw = redeem_gateway
    campaign = await gw.put_campaign(**RECHARGE)
    code = await gw.grant(campaign)
    response = await gw.redeem(code)
    assert response.status == 400
    assert await error_code(response) == "invalid_request"
    assert (await gw.redeem(code, account="acct")).status == 200


async def test_every_supplier_refusing_is_503_and_the_voucher_stays_redeemable(
    redeem_gateway: Gateway,
) -> None:
    gw = redeem_gateway
    campaign = await recharge_nobody_delivers(gw)
    code = await gw.grant(campaign)
    response = await gw.redeem(code, account="acct", key="retry-me")
    assert response.status == 503
    assert await error_code(response) == "suppliers_unavailable"
    await knobs(gw, "beta", failure_rate=0.0)
    again = await gw.redeem(code, account="acct", key="retry-me")  # 503 was not stored
    assert again.status == 200, await again.text()
    assert "Idempotent-Replayed" not in again.headers
    assert (await again.json())["delivery"]["supplier"] == "beta"


async def test_open_breakers_fail_fast_with_503_and_no_supplier_call(
    redeem_gateway: Gateway,
) -> None:
    gw = redeem_gateway
    for supplier in ("alpha", "beta"):
        forced = await gw.admin_call("POST", f"/admin/suppliers/{supplier}/force-open")
        assert forced.status == 200 and (await forced.json())["state"] == "forced_open"
    campaign = await gw.put_campaign(**RECHARGE)
    code = await gw.grant(campaign)
    response = await gw.redeem(code, account="acct")
    assert response.status == 503 and await error_code(response) == "suppliers_unavailable"
    assert await sim_orders(gw) == []
    await gw.admin_call("POST", "/admin/suppliers/alpha/force-closed")
    assert (await gw.redeem(code, account="acct")).status == 200
    listing = await gw.admin_call("GET", "/admin/suppliers")
    states = {s["id"]: s["state"] for s in (await listing.json())["suppliers"]}
    assert states == {"alpha": "forced_closed", "beta": "forced_open"}


async def test_supplier_5xx_is_an_unknown_outcome_left_pending_not_failed_over(
    redeem_gateway: Gateway,
) -> None:
    gw = redeem_gateway
    await knobs(gw, "alpha", down=True)
    campaign = await gw.put_campaign(**RECHARGE)
    code = await gw.grant(campaign)
    response = await gw.redeem(code, account="acct")
    assert response.status == 202
    body = await response.json()
    assert body["status"] == "pending" and body["delivery"]["supplier"] == "alpha"
    assert await sim_orders(gw) == []  # beta was never tried while alpha's outcome is unknown


async def test_processing_answer_is_pending_then_reconciled_to_delivered(
    redeem_gateway: Gateway,
) -> None:
    gw = redeem_gateway
    await knobs(gw, "alpha", processing_s=0.5)
    campaign = await gw.put_campaign(**RECHARGE)
    code = await gw.grant(campaign)
    response = await gw.redeem(code, account="acct", key="pending-key")
    body = await response.json()
    assert response.status == 202 and body["status"] == "pending"
    rid = body["redemption_id"]
    for _ in range(50):
        await asyncio.sleep(0.1)
        view = await gw.public.get(
            f"/v1/redemptions/{rid}", headers={"Authorization": "Bearer test-key"}
        )
        if (await view.json())["status"] == "delivered":
            break
    assert (await view.json())["status"] == "delivered"
    replay = await gw.redeem(code, account="acct", key="pending-key")
    assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert (await replay.json())["status"] == "delivered"
    assert (await gw.stats(campaign))["redeemed"] == 1


async def test_unknown_malformed_and_foreign_codes_are_indistinguishable_404(
    redeem_gateway: Gateway,
) -> None:
    gw = redeem_gateway
    campaign = await gw.put_campaign()
    code = await gw.grant(campaign, user_id="owner")
    bodies = []
    for candidate, user in (
        (code, "stranger"),
        ("NOT-A-CODE", "owner"),
        (code[:-3] + ("0" if code[-3] != "0" else "1") + code[-2:], "owner"),
    ):
        response = await gw.redeem(candidate, user_id=user)
        assert response.status == 404
        bodies.append((await response.json())["error"]["message"])
        assert await error_code(response) == "voucher_not_found"
    assert len(set(bodies)) == 1


async def test_redeemed_voucher_is_409_voucher_redeemed(redeem_gateway: Gateway) -> None:
    gw = redeem_gateway
    code = await gw.grant(await gw.put_campaign())
    assert (await gw.redeem(code)).status == 200
    again = await gw.redeem(code)
    assert again.status == 409 and await error_code(again) == "voucher_redeemed"


async def test_frozen_voucher_is_409_until_unfrozen(redeem_gateway: Gateway) -> None:
    gw = redeem_gateway
    code = await gw.grant(await gw.put_campaign())
    assert (await gw.admin_call("POST", f"/admin/vouchers/{code}/freeze")).status == 200
    frozen = await gw.redeem(code)
    assert frozen.status == 409 and await error_code(frozen) == "voucher_frozen"
    assert (await gw.admin_call("POST", f"/admin/vouchers/{code}/unfreeze")).status == 200
    assert (await gw.redeem(code)).status == 200


async def test_expired_voucher_is_409_voucher_expired(redeem_gateway: Gateway) -> None:
    gw = redeem_gateway
    code = await gw.grant(await gw.put_campaign(voucher_ttl_s=1))
    await asyncio.sleep(1.1)
    expired = await gw.redeem(code)
    assert expired.status == 409 and await error_code(expired) == "voucher_expired"


async def test_card_secret_is_delivered_from_the_pool_and_pool_empty_is_503(
    redeem_gateway: Gateway,
) -> None:
    gw = redeem_gateway
    campaign = await gw.put_campaign(benefit={"kind": "card_secret", "sku": "gift"})
    first = await gw.grant(campaign, user_id="u1")
    second = await gw.grant(campaign, user_id="u2")
    upload = await gw.admin_call(
        "POST",
        f"/admin/campaigns/{campaign}/card-secrets",
        {"cards": [{"card_no": "C-1", "secret": "s3cret-1"}]},
    )
    assert upload.status == 200
    assert "s3cret" not in await upload.text()
    response = await gw.redeem(first, user_id="u1")
    assert (await response.json())["delivery"] == {
        "kind": "card_secret",
        "card_no": "C-1",
        "secret": "s3cret-1",
    }
    empty = await gw.redeem(second, user_id="u2")
    assert empty.status == 503 and await error_code(empty) == "pool_empty"
    await gw.admin_call(
        "POST",
        f"/admin/campaigns/{campaign}/card-secrets",
        {"cards": [{"card_no": "C-2", "secret": "s3cret-2"}]},
    )
    assert (await gw.redeem(second, user_id="u2")).status == 200


async def test_redemption_is_readable_by_its_client_only(redeem_gateway: Gateway) -> None:
    gw = redeem_gateway
    code = await gw.grant(await gw.put_campaign())
    rid = (await (await gw.redeem(code)).json())["redemption_id"]
    own = await gw.public.get(
        f"/v1/redemptions/{rid}", headers={"Authorization": "Bearer test-key"}
    )
    assert own.status == 200 and (await own.json())["status"] == "delivered"
    other = await gw.public.get(
        f"/v1/redemptions/{rid}", headers={"Authorization": f"Bearer {OTHER_KEY}"}
    )
    assert other.status == 404 and await error_code(other) == "redemption_not_found"
    missing = await gw.public.get(
        "/v1/redemptions/rdm_nope", headers={"Authorization": "Bearer test-key"}
    )
    assert missing.status == 404


async def test_redeem_idempotency_replay_and_reuse(redeem_gateway: Gateway) -> None:
    gw = redeem_gateway
    campaign = await gw.put_campaign(stock=5, per_user_limit=2)
    code = await gw.grant(campaign)
    other = await gw.grant(campaign)
    first = await gw.redeem(code, key="rk")
    again = await gw.redeem(code, key="rk")
    assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await first.json()
    reused = await gw.redeem(other, key="rk")
    assert reused.status == 422 and await error_code(reused) == "idempotency_key_reused"


async def test_default_lockout_refuses_code_guessing_before_the_51st_failure(
    redeem_gateway: Gateway,
) -> None:
    gw = redeem_gateway
    statuses = []
    for i in range(60):
        response = await gw.redeem(f"GUESS{i:015d}", user_id=f"guesser-{i}", device_id=f"d{i}")
        statuses.append(response.status)
    assert statuses[:50] == [404] * 50
    assert statuses[50:] == [429] * 10
    locked = await gw.redeem("GUESS", user_id="x", device_id="y")
    assert locked.status == 429 and int(locked.headers["Retry-After"]) > 0
