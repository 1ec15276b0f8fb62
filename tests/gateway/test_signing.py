"""SPEC §6 request signing at the gateway: a valid signature passes; every bad, stale or
replayed one is 401 before the handler runs (no stock, no event, no key written)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from gateway.valkey import keys
from risk.signing import sign
from tests.gateway.conftest import Gateway

SIGNER_KEY = "signer-key"
SECRET = "s3cret-\u00fcber"  # keyed as UTF-8 bytes
SIGNER = f"""
[[clients]]
id = "signer"
api_key = "{SIGNER_KEY}"
require_signature = true
secret = "{SECRET}"
"""


@pytest.fixture
async def signing(gateway_factory: Any) -> AsyncIterator[Gateway]:
    async with gateway_factory(SIGNER) as gw:
        yield gw


def signed(
    path: str,
    body: bytes,
    *,
    ts: int | None = None,
    nonce: str | None = None,
    secret: str = SECRET,
    signed_path: str | None = None,
    signed_body: bytes | None = None,
    method: str = "POST",
) -> dict[str, str]:
    """Headers for a signed POST; the keyword arguments make it wrong in one way."""
    timestamp = str(int(time.time()) if ts is None else ts)
    nonce = nonce or uuid.uuid4().hex
    signature = sign(
        secret,
        method,
        signed_path or path,
        timestamp,
        nonce,
        body if signed_body is None else signed_body,
    )
    return {
        "Authorization": f"Bearer {SIGNER_KEY}",
        "Content-Type": "application/json",
        "Idempotency-Key": uuid.uuid4().hex,
        "X-Timestamp": timestamp,
        "X-Nonce": nonce,
        "X-Signature": signature,
    }


def claim_body(user_id: str = "ruth", device_id: str = "phone") -> bytes:
    return msgspec.json.encode({"user_id": user_id, "device_id": device_id})


async def post(gw: Gateway, path: str, body: bytes, headers: dict[str, str]) -> Any:
    return await gw.public.post(path, data=body, headers=headers)


async def assert_unauthorized(response: Any) -> None:
    assert response.status == 401, await response.text()
    assert (await response.json())["error"]["code"] == "unauthorized"


async def test_valid_signature_is_accepted(signing: Gateway) -> None:
    campaign = await signing.put_campaign(stock=5)
    path = f"/v1/campaigns/{campaign}/claims"
    response = await post(signing, path, claim_body(), signed(path, claim_body()))
    assert response.status == 201, await response.text()
    # Upper-case hex is the same signature.
    headers = signed(path, claim_body("ann"))
    headers["X-Signature"] = headers["X-Signature"].upper()
    assert (await post(signing, path, claim_body("ann"), headers)).status == 201


async def test_signed_path_includes_the_query_string(signing: Gateway) -> None:
    campaign = await signing.put_campaign(stock=5)
    path = f"/v1/campaigns/{campaign}/claims?source=app&v=2"
    response = await post(signing, path, claim_body(), signed(path, claim_body()))
    assert response.status == 201, await response.text()


@pytest.mark.parametrize("skew_s", [-290, 290])
async def test_timestamps_within_the_skew_are_accepted(signing: Gateway, skew_s: int) -> None:
    campaign = await signing.put_campaign(stock=5)
    path = f"/v1/campaigns/{campaign}/claims"
    headers = signed(path, claim_body(), ts=int(time.time()) + skew_s)
    assert (await post(signing, path, claim_body(), headers)).status == 201


def without(header: str) -> Any:
    def make(path: str, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        headers = signed(path, body)
        del headers[header]
        return path, body, headers

    return make


BAD = {
    "stale_timestamp": lambda p, b: (p, b, signed(p, b, ts=int(time.time()) - 301)),
    "future_timestamp": lambda p, b: (p, b, signed(p, b, ts=int(time.time()) + 302)),
    "non_numeric_timestamp": lambda p, b: (p, b, signed(p, b) | {"X-Timestamp": "12.5"}),
    "tampered_body": lambda p, b: (p, claim_body("mallory"), signed(p, b)),
    "wrong_secret": lambda p, b: (p, b, signed(p, b, secret="guessed")),
    "wrong_method": lambda p, b: (p, b, signed(p, b, method="PUT")),
    "query_not_signed": lambda p, b: (p + "?x=1", b, signed(p + "?x=1", b, signed_path=p)),
    "other_path_signed": lambda p, b: (p, b, signed(p, b, signed_path=p + "x")),
    "missing_timestamp": without("X-Timestamp"),
    "missing_nonce": without("X-Nonce"),
    "missing_signature": without("X-Signature"),
    "missing_bearer": without("Authorization"),
    "short_signature": lambda p, b: (p, b, signed(p, b) | {"X-Signature": "ab" * 16}),
}


async def footprint(gw: Gateway, campaign: str) -> tuple[Any, ...]:
    """Everything a claim reaching the handler would change."""
    events = await gw.redis.xlen(keys.events(keys.shard_tag(campaign)))
    return await gw.stats(campaign), events, await gw.redis.dbsize()


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_signature_is_401_and_the_handler_is_never_reached(
    signing: Gateway, case: str
) -> None:
    campaign = await signing.put_campaign(stock=1)
    before = await footprint(signing, campaign)
    path, body, headers = BAD[case](f"/v1/campaigns/{campaign}/claims", claim_body())
    await assert_unauthorized(await post(signing, path, body, headers))
    assert await footprint(signing, campaign) == before
    assert (await signing.stats(campaign))["stock_left"] == 1


async def test_replayed_nonce_is_401_and_changes_nothing(signing: Gateway) -> None:
    campaign = await signing.put_campaign(stock=5, per_user_limit=5)
    path = f"/v1/campaigns/{campaign}/claims"
    headers = signed(path, claim_body())
    assert (await post(signing, path, claim_body(), headers)).status == 201
    before = await footprint(signing, campaign)
    # The exact request again, and again with a fresh (unsigned) Idempotency-Key.
    await assert_unauthorized(await post(signing, path, claim_body(), headers))
    headers["Idempotency-Key"] = uuid.uuid4().hex
    await assert_unauthorized(await post(signing, path, claim_body(), headers))
    assert await footprint(signing, campaign) == before
    assert (await signing.stats(campaign))["granted"] == 1


async def test_a_rejected_signature_does_not_spend_its_nonce(signing: Gateway) -> None:
    campaign = await signing.put_campaign(stock=5)
    path = f"/v1/campaigns/{campaign}/claims"
    forged = signed(path, claim_body(), nonce="n-1", secret="guessed")
    await assert_unauthorized(await post(signing, path, claim_body(), forged))
    genuine = signed(path, claim_body(), nonce="n-1")
    assert (await post(signing, path, claim_body(), genuine)).status == 201


async def test_unsigned_requests_from_a_signing_client_are_401(signing: Gateway) -> None:
    campaign = await signing.put_campaign(stock=1)
    before = await footprint(signing, campaign)
    await assert_unauthorized(await signing.claim(campaign, api_key=SIGNER_KEY))
    assert await footprint(signing, campaign) == before
    # Clients without require_signature are unaffected.
    assert (await signing.claim(campaign)).status == 201


async def test_redemptions_are_signed_too_and_a_replay_is_not_replayed(signing: Gateway) -> None:
    campaign = await signing.put_campaign(stock=5)
    code = await signing.grant(campaign, user_id="ruth", device_id="phone")
    body = msgspec.json.encode({"voucher_code": code, "user_id": "ruth", "device_id": "phone"})
    await assert_unauthorized(
        await post(signing, "/v1/redemptions", body, signed("/v1/redemptions", b"{}"))
    )
    assert (await signing.stats(campaign))["redeemed"] == 0
    headers = signed("/v1/redemptions", body)
    first = await post(signing, "/v1/redemptions", body, headers)
    assert first.status == 200, await first.text()
    # Same Idempotency-Key and nonce: an idempotent replay would be 200; a spent nonce is 401.
    await assert_unauthorized(await post(signing, "/v1/redemptions", body, headers))
    assert (await signing.stats(campaign))["redeemed"] == 1


async def test_a_nonce_is_spent_once_behind_claim_limits_and_rules(gateway_factory: Any) -> None:
    """The nonce key follows the limit and rule keys in the claim script's call."""
    config = SIGNER + (
        '[limits]\nclaim = [{ by = "ip", limit = 50, window_s = 60 }, '
        '{ by = "user", limit = 50, window_s = 60 }]\n'
        '[[risk.rules]]\nid = "ip-claims"\nkind = "claims_per_ip"\nthreshold = 50\n'
        'window_s = 60\ndecision = "deny"\nmode = "shadow"\n'
    )
    async with gateway_factory(config) as gw:
        campaign = await gw.put_campaign(stock=5, per_user_limit=5)
        path = f"/v1/campaigns/{campaign}/claims"
        headers = signed(path, claim_body(), nonce="behind-rules")
        assert (await post(gw, path, claim_body(), headers)).status == 201
        headers["Idempotency-Key"] = uuid.uuid4().hex
        await assert_unauthorized(await post(gw, path, claim_body(), headers))
        fresh = signed(path, claim_body(), nonce="behind-rules-2")
        assert (await post(gw, path, claim_body(), fresh)).status == 201
        assert (await gw.stats(campaign))["granted"] == 2
