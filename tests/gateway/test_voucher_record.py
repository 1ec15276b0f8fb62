"""The voucher is the claim's idempotency record: its code is derived from the client and the
Idempotency-Key, so a grant writes one key, and the claim replays whatever the voucher became."""

from __future__ import annotations

import time
from typing import Any

from gateway import codes
from gateway.app import SERVICES
from gateway.valkey import keys
from tests.gateway.conftest import Gateway
from tests.gateway.test_redemptions import error_code, knobs, recharge_nobody_delivers


def data_key_config(fill: str) -> str:
    return f'[security]\ndata_key = "{fill * 43}="\n'


def code_key_of(gw: Gateway) -> bytes:
    return bytes(gw.public.server.app[SERVICES].code_key)


def claim_id_of(gw: Gateway, code: str) -> str:
    """The claim id the gateway's events and answers give the code (its data key's)."""
    return gw.public.server.app[SERVICES].claim_ids.of(code)


async def test_a_grant_writes_its_voucher_and_no_idempotency_key(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=5)
    before = set(await gateway.redis.keys("*"))
    first = await gateway.claim(campaign, user_id="u1", device_id="d1", key="one-record")
    assert first.status == 201
    code = (await first.json())["voucher"]["code"]
    tag = keys.shard_tag(campaign)
    assert code == codes.voucher_code_for(tag, code_key_of(gateway), "app", campaign, "one-record")
    added = {k.decode() for k in set(await gateway.redis.keys("*")) - before}
    assert added == {keys.voucher(tag, code)}  # the stream and campaign hash already existed
    state, _expires, stored_campaign, owner, _fp = (
        (await gateway.redis.get(keys.voucher(tag, code))).decode().split("\x1f")
    )
    assert (state, stored_campaign, owner) == ("i", campaign, "u1")


async def test_a_claim_replays_through_every_state_its_voucher_passes(
    redeem_gateway: Gateway,
) -> None:
    gw = redeem_gateway
    campaign = await recharge_nobody_delivers(gw)
    first = await gw.claim(campaign, user_id="ruth", device_id="dev", key="claim-once")
    assert first.status == 201
    granted = await first.json()
    code = granted["voucher"]["code"]

    async def replays() -> None:
        again = await gw.claim(campaign, user_id="ruth", device_id="dev", key="claim-once")
        assert again.status == 201, await again.text()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert await again.json() == granted
        other = await gw.claim(campaign, user_id="sam", device_id="dev", key="claim-once")
        assert other.status == 422
        assert await error_code(other) == "idempotency_key_reused"

    # Reserved for a supplier call, then every supplier refused: redeemable again.
    refused = await gw.redeem(code, account="acct")
    assert refused.status == 503 and await error_code(refused) == "suppliers_unavailable"
    await replays()
    assert (await gw.admin_call("POST", f"/admin/vouchers/{code}/freeze")).status == 200
    await replays()
    assert (await gw.admin_call("POST", f"/admin/vouchers/{code}/unfreeze")).status == 200
    await knobs(gw, "beta", failure_rate=0.0)
    delivered = await gw.redeem(code, account="acct")
    assert delivered.status == 200, await delivered.text()
    await replays()
    assert (await gw.redeem(code, account="acct")).status == 409  # delivered once
    assert (await gw.stats(campaign))["granted"] == 1


async def test_a_stored_refusal_is_no_voucher_to_redeem_or_freeze(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=0)
    refused = await gateway.claim(campaign, user_id="u", device_id="d", key="too-late")
    assert refused.status == 409 and await error_code(refused) == "sold_out"
    request_id = (await refused.json())["error"]["request_id"]
    code = codes.voucher_code_for(
        keys.shard_tag(campaign), code_key_of(gateway), "app", campaign, "too-late"
    )
    assert (await gateway.redis.get(keys.voucher(keys.shard_tag(campaign), code))) is not None
    # The refusal record names its request where a voucher names its owner: no match either.
    for user_id in ("u", request_id):
        redeem = await gateway.redeem(code, user_id=user_id, device_id="d")
        assert redeem.status == 404 and await error_code(redeem) == "voucher_not_found"
    freeze = await gateway.admin_call("POST", f"/admin/vouchers/{code}/freeze")
    assert freeze.status == 404


async def test_gateways_sharing_a_data_key_derive_the_same_codes(gateway_factory: Any) -> None:
    async with (
        gateway_factory(data_key_config("A")) as one,
        gateway_factory(data_key_config("A")) as two,
        gateway_factory(data_key_config("C")) as other,
    ):
        campaign = await one.put_campaign(stock=5, per_user_limit=5)
        first = await one.claim(campaign, user_id="u", device_id="d", key="retried")
        retried = await two.claim(campaign, user_id="u", device_id="d", key="retried")
        assert first.status == retried.status == 201
        assert retried.headers["Idempotent-Replayed"] == "true"
        assert await retried.json() == await first.json()
        assert code_key_of(one) == code_key_of(two) != code_key_of(other)
        assert (await one.stats(campaign))["granted"] == 1


def test_codes_depend_on_tag_client_campaign_key_and_secret_and_pass_the_check() -> None:
    secret, other_secret = codes.code_key(b"k" * 32), codes.code_key(b"j" * 32)
    code = codes.voucher_code_for("AB", secret, "app", "camp", "key-1")
    assert code == codes.voucher_code_for("AB", secret, "app", "camp", "key-1")
    assert codes.normalise_code(code) == code and code.startswith("AB")
    others = {
        codes.voucher_code_for("AC", secret, "app", "camp", "key-1")[2:],
        codes.voucher_code_for("AB", secret, "other", "camp", "key-1")[2:],
        codes.voucher_code_for("AB", secret, "app", "camp2", "key-1")[2:],
        codes.voucher_code_for("AB", secret, "app", "camp", "key-2")[2:],
        codes.voucher_code_for("AB", other_secret, "app", "camp", "key-1")[2:],
    }
    assert code[2:] not in others and len(others) == 5


async def test_a_voucher_granted_before_fingerprints_were_kept_still_redeems(
    redeem_gateway: Gateway,
) -> None:
    gw = redeem_gateway
    campaign = await recharge_nobody_delivers(gw)
    tag = keys.shard_tag(campaign)
    code = codes.voucher_code_for(tag, bytes(32), "app", campaign, "granted-long-ago")
    expires = int(time.time() * 1000) + 3_600_000
    voucher = keys.voucher(tag, code)
    await gw.redis.set(voucher, f"i\x1f{expires}\x1f{campaign}\x1fruth", px=3_600_000)
    refused = await gw.redeem(code, account="acct")
    assert refused.status == 503 and await error_code(refused) == "suppliers_unavailable"
    assert (await gw.redis.get(voucher)).decode() == f"i\x1f{expires}\x1f{campaign}\x1fruth\x1f-"
    await knobs(gw, "beta", failure_rate=0.0)
    delivered = await gw.redeem(code, account="acct")
    assert delivered.status == 200, await delivered.text()
    state, *_ = (await gw.redis.get(voucher)).decode().split("\x1f")
    assert state == "d"
