"""Revoking a voucher (SPEC §4): its answers, what it gives back, its event, what a redemption and
a replayed claim see afterwards, and `stock_added - stock_left == granted - returned` under
concurrent claims and revokes. tests/cluster/test_cluster_revoke.py runs the tests that need
only `gateway` on the 3-master cluster too."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from gateway import codes
from gateway.claims.desk import SOLD_OUT_FLAG_S
from gateway.records import SEP
from gateway.valkey import keys
from tests.gateway.conftest import Gateway
from tests.gateway.test_redemptions import RECHARGE, error_code, knobs
from tests.gateway.test_voucher_record import claim_id_of, code_key_of


async def revoke(gw: Gateway, code: str, return_stock: bool, reason: str = "scalper") -> Any:
    body = {"return_stock": return_stock, "reason": reason}
    return await gw.admin_call("POST", f"/admin/vouchers/{code}/revoke", body)


async def voucher_events(gw: Gateway, code: str, kind: str) -> list[dict[str, str]]:
    entries = await gw.redis.xrange(keys.events(codes.code_tag(code)))
    events = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
    return [e for e in events if e["type"] == kind]


def invariant_holds(stats: dict[str, Any]) -> bool:
    moved = stats["stock_added"] - stats["stock_left"]
    return bool(moved == stats["granted"] - stats["returned"])


async def test_a_revoke_with_return_stock_gives_the_unit_and_allowances_back(
    gateway: Gateway,
) -> None:
    gw = gateway
    campaign = await gw.put_campaign(stock=1, per_user_limit=1, per_device_limit=1)
    code = await gw.grant(campaign, user_id="ruth", device_id="dev")
    assert (await gw.claim(campaign, user_id="sam", device_id="pad")).status == 409  # sold out

    response = await revoke(gw, code, return_stock=True)
    await asyncio.sleep(SOLD_OUT_FLAG_S)  # the workers' sold-out flag, up for half a second
    assert response.status == 200, await response.text()
    assert await response.json() == {"voucher_code": code, "state": "revoked", "returned": True}
    stats = await gw.stats(campaign)
    assert (stats["stock_left"], stats["granted"], stats["revoked"], stats["returned"]) == (
        1,
        1,
        1,
        1,
    )
    assert invariant_holds(stats)
    # The same user on the same device may claim again: both allowances were given back.
    again = await gw.claim(campaign, user_id="ruth", device_id="dev")
    assert again.status == 201, await again.text()
    stats = await gw.stats(campaign)
    assert (stats["stock_left"], stats["granted"], stats["returned"]) == (0, 2, 1)
    assert invariant_holds(stats)


async def test_a_revoke_without_return_stock_keeps_stock_and_allowances_spent(
    gateway: Gateway,
) -> None:
    gw = gateway
    campaign = await gw.put_campaign(stock=5, per_user_limit=1)
    code = await gw.grant(campaign, user_id="ruth")
    response = await revoke(gw, code, return_stock=False)
    assert await response.json() == {"voucher_code": code, "state": "revoked", "returned": False}
    stats = await gw.stats(campaign)
    assert (stats["stock_left"], stats["revoked"], stats["returned"]) == (4, 1, 0)
    assert invariant_holds(stats)
    refused = await gw.claim(campaign, user_id="ruth")
    assert refused.status == 409 and await error_code(refused) == "limit_reached"


async def test_a_second_revoke_answers_the_first_result_and_moves_nothing(
    gateway: Gateway,
) -> None:
    gw = gateway
    campaign = await gw.put_campaign(stock=5, per_user_limit=2)
    code = await gw.grant(campaign, user_id="ruth")
    first = await revoke(gw, code, return_stock=True)
    stats = await gw.stats(campaign)
    for return_stock in (True, False):
        again = await revoke(gw, code, return_stock=return_stock, reason="again")
        assert again.status == 200
        assert await again.json() == await first.json()
    assert await gw.stats(campaign) == stats
    assert len(await voucher_events(gw, code, "voucher.revoked")) == 1


async def test_the_revoke_event_names_actor_reason_and_the_claim_never_the_code(
    gateway: Gateway,
) -> None:
    gw = gateway
    campaign = await gw.put_campaign(stock=5)
    code = await gw.grant(campaign, user_id="ruth")
    assert (await revoke(gw, code, return_stock=True, reason="resold on a forum")).status == 200
    (event,) = await voucher_events(gw, code, "voucher.revoked")
    assert event["claim_id"] == claim_id_of(gw, code)
    assert event["voucher_code"] == codes.mask_code(code) and code not in str(event)
    assert (event["actor"], event["actor_ip"]) == ("admin", "127.0.0.1")
    assert (event["reason"], event["returned"]) == ("resold on a forum", "true")
    assert (event["campaign_id"], event["user_id"]) == (campaign, "ruth")


async def test_a_revoked_voucher_is_not_redeemable_and_its_claim_still_replays_201(
    gateway: Gateway,
) -> None:
    gw = gateway
    campaign = await gw.put_campaign(stock=5)
    first = await gw.claim(campaign, user_id="ruth", device_id="dev", key="the-claim")
    assert first.status == 201
    code = (await first.json())["voucher"]["code"]
    assert (await revoke(gw, code, return_stock=True)).status == 200
    redeem = await gw.redeem(code, user_id="ruth", device_id="dev")
    assert redeem.status == 409 and await error_code(redeem) == "voucher_revoked"
    replayed = await gw.claim(campaign, user_id="ruth", device_id="dev", key="the-claim")
    assert replayed.status == 201 and replayed.headers["Idempotent-Replayed"] == "true"
    assert await replayed.json() == await first.json()
    assert (await gw.stats(campaign))["granted"] == 1


async def test_unknown_and_refused_codes_are_404_and_a_body_is_required(gateway: Gateway) -> None:
    gw = gateway
    campaign = await gw.put_campaign(stock=0)
    refused = await gw.claim(campaign, user_id="u", device_id="d", key="too-late")
    assert refused.status == 409
    tag = keys.shard_tag(campaign)
    # The refusal is stored for replay at the code it would have granted: still no voucher.
    refused_code = codes.voucher_code_for(tag, code_key_of(gw), "app", campaign, "too-late")
    assert await gw.redis.exists(keys.voucher(tag, refused_code))
    never = codes.voucher_code_for(tag, code_key_of(gw), "app", campaign, "never-claimed")
    for unknown in (refused_code, never, "not-a-code"):
        response = await revoke(gw, unknown, return_stock=True)
        assert response.status == 404 and await error_code(response) == "voucher_not_found"
    granted = await gw.grant(await gw.put_campaign(stock=1))
    bad = await gw.admin_call("POST", f"/admin/vouchers/{granted}/revoke", {"reason": "x"})
    assert bad.status == 400 and await error_code(bad) == "invalid_request"


async def test_redeemed_and_in_flight_vouchers_cannot_be_revoked(redeem_gateway: Gateway) -> None:
    gw = redeem_gateway
    delivered = await gw.grant(await gw.put_campaign(stock=5))
    assert (await gw.redeem(delivered)).status == 200
    response = await revoke(gw, delivered, return_stock=True)
    assert response.status == 409 and await error_code(response) == "voucher_redeemed"

    await knobs(gw, "alpha", down=True)  # an unknown outcome: the recharge stays in flight
    campaign = await gw.put_campaign(stock=5, **RECHARGE)
    in_flight = await gw.grant(campaign)
    assert (await gw.redeem(in_flight, account="acct")).status == 202
    response = await revoke(gw, in_flight, return_stock=True)
    assert response.status == 409 and await error_code(response) == "redemption_pending"
    stats = await gw.stats(campaign)
    assert (stats["stock_left"], stats["revoked"], stats["returned"]) == (4, 0, 0)


async def test_a_frozen_voucher_can_be_revoked(gateway: Gateway) -> None:
    gw = gateway
    campaign = await gw.put_campaign(stock=5, per_device_limit=1)
    code = await gw.grant(campaign, user_id="ruth", device_id="dev")
    assert (await gw.admin_call("POST", f"/admin/vouchers/{code}/freeze")).status == 200
    assert (await revoke(gw, code, return_stock=True)).status == 200
    assert (await gw.claim(campaign, user_id="ruth", device_id="dev")).status == 201
    for action in ("unfreeze", "freeze"):  # a revoked voucher stays revoked
        response = await gw.admin_call("POST", f"/admin/vouchers/{code}/{action}")
        assert response.status == 409 and await error_code(response) == "voucher_revoked"
    redeem = await gw.redeem(code, user_id="ruth", device_id="dev")
    assert redeem.status == 409 and await error_code(redeem) == "voucher_revoked"


async def test_a_grant_keeps_the_device_only_when_devices_have_an_allowance(
    gateway: Gateway,
) -> None:
    gw = gateway
    for per_device, fields in ((0, 5), (2, 6)):
        campaign = await gw.put_campaign(stock=5, per_device_limit=per_device)
        code = await gw.grant(campaign, user_id="ruth", device_id="tablet")
        record = (await gw.redis.get(keys.voucher(codes.code_tag(code), code))).decode()
        assert len(record.split(SEP)) == fields
        assert record.endswith(SEP + "tablet") == (per_device > 0)


async def test_stock_moves_as_grants_and_returns_under_concurrent_claims_and_revokes(
    gateway: Gateway,
) -> None:
    """Claims from many users race revokes (some returning stock, some twice at once with
    different minds) on a small stock: every answer agrees with the counters, and
    stock_added - stock_left == granted - returned at the end."""
    gw = gateway
    campaign = await gw.put_campaign(stock=20, per_user_limit=1, per_device_limit=1)
    rng = random.Random(17)
    granted: list[str] = []
    returned_by_answer: dict[str, bool] = {}

    async def revoke_twice(code: str) -> None:
        answers = await asyncio.gather(
            revoke(gw, code, return_stock=rng.random() < 0.7),
            revoke(gw, code, return_stock=rng.random() < 0.7),
        )
        bodies = [await a.json() for a in answers]
        assert [a.status for a in answers] == [200, 200] and bodies[0] == bodies[1]
        returned_by_answer[code] = bodies[0]["returned"]

    async def claimant(n: int) -> None:
        await asyncio.sleep(n * 0.01)  # spread over 1.2 s: claims keep meeting revokes
        response = await gw.claim(campaign, user_id=f"user-{n}", device_id=f"dev-{n}")
        if response.status == 201:
            code = (await response.json())["voucher"]["code"]
            granted.append(code)
            if rng.random() < 0.6:
                await revoke_twice(code)
        else:
            assert response.status == 409 and await error_code(response) == "sold_out"

    await asyncio.gather(*(claimant(n) for n in range(120)))
    stats = await gw.stats(campaign)
    assert stats["granted"] == len(granted)
    assert stats["revoked"] == len(returned_by_answer)
    assert stats["returned"] == sum(returned_by_answer.values())
    assert invariant_holds(stats), stats
    assert stats["returned"] > 0


ROLES = """
[[admin.users]]
name = "vic"
token = "viewer-token"
role = "viewer"
[[admin.users]]
name = "olga"
token = "operator-token"
role = "operator"
"""


async def test_an_operator_may_revoke_and_a_viewer_may_not(gateway_factory: Any) -> None:
    async with gateway_factory(ROLES) as gw:
        code = await gw.grant(await gw.put_campaign(stock=5))
        answers = {}
        for token in ("viewer-token", "operator-token"):
            response = await gw.admin.post(
                f"/admin/vouchers/{code}/revoke",
                json={"return_stock": False, "reason": "chargeback"},
                headers={"Authorization": f"Bearer {token}"},
            )
            answers[token] = response.status
        assert answers == {"viewer-token": 403, "operator-token": 200}
        (event,) = await voucher_events(gw, code, "voucher.revoked")
        assert (event["actor"], event["reason"], event["returned"]) == (
            "olga",
            "chargeback",
            "false",
        )


async def test_a_returned_unit_goes_back_to_its_day_its_owners_daily_limit_and_the_budget(
    gateway: Gateway,
) -> None:
    gw = gateway
    campaign = await gw.put_campaign(
        stock=10,
        per_user_limit=5,
        daily_stock=2,
        per_user_daily_limit=1,
        timezone="UTC",
        unit_cost=100,
        budget=1000,
        ends_at="2030-01-01T00:00:00Z",
    )
    code = await gw.grant(campaign, user_id="ruth", device_id="dev")
    await gw.grant(campaign, user_id="sam", device_id="pad")
    assert (await gw.stats(campaign))["today"] == {"granted": 2, "daily_stock_left": 0}
    again = await gw.claim(campaign, user_id="ruth", device_id="dev")
    assert (again.status, await error_code(again)) == (409, "daily_stock_exhausted")

    assert (await revoke(gw, code, return_stock=True)).status == 200
    await asyncio.sleep(SOLD_OUT_FLAG_S)  # the flag answers "come back tomorrow" briefly
    stats = await gw.stats(campaign)
    assert stats["today"] == {"granted": 1, "daily_stock_left": 1}
    assert (stats["budget_spent"], stats["budget_left"]) == (100, 900)
    assert invariant_holds(stats)
    # The day's unit and ruth's daily allowance are both back: she may claim today again.
    again = await gw.claim(campaign, user_id="ruth", device_id="dev")
    assert again.status == 201, await again.text()
    assert (await gw.stats(campaign))["today"] == {"granted": 2, "daily_stock_left": 0}
