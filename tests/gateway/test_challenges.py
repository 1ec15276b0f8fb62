"""SPEC §6 human checks: a challenge pass lifts a `challenge` decision once, for the request it
was minted for, and nothing else; every bad pass is answered exactly like no pass at all."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import SERVICES
from gateway.valkey import keys
from risk.challenge import (
    MAX_AHEAD_S,
    SPENT_TTL_S,
    PassCheck,
    check_pass,
    mint_pass,
    pass_message,
)
from risk.lists import VERSION_KEY
from risk.signing import NONCE_TTL_S
from tests.gateway.conftest import Gateway
from tests.gateway.test_risk import UNKNOWN_CODE, rule

SECRET = "pass-secret-\u00e9"  # UTF-8, not ASCII only
PASS_CLIENT = f"""
[[clients]]
id = "pass-app"
api_key = "pass-key"
challenge_secret = "{SECRET}"
[[clients]]
id = "pass-other"
api_key = "pass-other-key"
challenge_secret = "{SECRET}"
"""
ROAMING = rule("roaming", "distinct_devices_per_user", 1, "challenge")
BUSY_IP = rule("busy_ip", "claims_per_ip", 1, "challenge")  # every claim after the first
NOW = 1_800_000_000.0


# -- the pure check ------------------------------------------------------------------------


def test_a_minted_pass_checks_for_its_client_user_and_device_only() -> None:
    minted = mint_pass(SECRET, "app", "ruth", "phone", ttl_s=60, nonce="n" * 16, now=NOW)
    exp, nonce, sig = minted.split(".")
    assert (exp, nonce) == (str(int(NOW) + 60), "n" * 16)
    assert check_pass(SECRET, minted, "app", "ruth", "phone", NOW) == PassCheck(True, "n" * 16)
    assert check_pass(SECRET, f"{exp}.{nonce}.{sig.upper()}", "app", "ruth", "phone", NOW).ok
    foreign = [("other", "ruth", "phone"), ("app", "eve", "phone"), ("app", "ruth", "tablet")]
    for client, user, device in foreign:
        assert check_pass(SECRET, minted, client, user, device, NOW).reason == "bad_signature"
    assert check_pass("another", minted, "app", "ruth", "phone", NOW).reason == "bad_signature"
    assert check_pass("", minted, "app", "ruth", "phone", NOW).reason == "no_secret"


def test_the_signed_message_is_the_specs() -> None:
    assert pass_message("c", "u", "d", 5, "nnnn") == b"challenge-pass\nc\nu\nd\n5\nnnnn"


def test_expiry_is_checked_against_the_injected_clock() -> None:
    def at(exp: int) -> str:
        return mint_pass(SECRET, "app", "u", "d", ttl_s=exp - int(NOW), nonce="x" * 20, now=NOW)

    assert check_pass(SECRET, at(int(NOW)), "app", "u", "d", NOW).reason == "expired"
    assert check_pass(SECRET, at(int(NOW) + 1), "app", "u", "d", NOW).ok
    assert check_pass(SECRET, at(int(NOW) + MAX_AHEAD_S), "app", "u", "d", NOW).ok
    too_far = at(int(NOW) + MAX_AHEAD_S + 1)
    assert check_pass(SECRET, too_far, "app", "u", "d", NOW).reason == "too_far_ahead"
    assert check_pass(SECRET, too_far, "app", "u", "d", NOW + 2).ok


@pytest.mark.parametrize(
    "header",
    [
        "",
        "1800000060",
        f"1800000060.{'n' * 15}.{'0' * 64}",  # nonce too short
        f"1800000060.{'n' * 65}.{'0' * 64}",  # nonce too long
        f"1800000060.{'n' * 15}=.{'0' * 64}",  # outside [A-Za-z0-9_-]
        f"1800000060.{'n' * 16}.{'0' * 63}",  # signature not 64 hex
        f"1800000060.{'n' * 16}.{'g' * 64}",
        f"-1800000060.{'n' * 16}.{'0' * 64}",
        f"1800000060.{'n' * 16}.{'0' * 64}.x",
        f"\u0661800000060.{'n' * 16}.{'0' * 64}",  # a non-ASCII digit
    ],
)
def test_malformed_passes_are_refused_before_any_signing(header: str) -> None:
    assert check_pass(SECRET, header, "app", "u", "d", NOW) == PassCheck(False, "", "malformed")


def test_a_spent_nonce_is_kept_as_long_as_a_pass_can_live() -> None:
    assert SPENT_TTL_S >= MAX_AHEAD_S
    assert NONCE_TTL_S >= SPENT_TTL_S  # the redeem guard keeps a pass with the nonce's TTL


# -- claims, end to end --------------------------------------------------------------------


def fresh_pass(
    user: str, device: str, client: str = "pass-app", secret: str = SECRET, **kw: Any
) -> str:
    return mint_pass(secret, client, user, device, **kw)


async def challenge_metrics(gw: Gateway) -> dict[tuple[str, ...], float]:
    response = await gw.public.get("/metrics")
    found: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            if sample.name.startswith("gateway_challenge"):
                labels = [sample.labels[k] for k in ("route", "reason") if k in sample.labels]
                found[(sample.name, *labels)] = sample.value
    return found


async def claim(gw: Gateway, campaign: str, user: str, device: str, header: str | None) -> Any:
    headers = {"X-Challenge-Pass": header} if header is not None else {}
    return await gw.claim(
        campaign, user_id=user, device_id=device, api_key="pass-key", headers=headers
    )


async def events_of(gw: Gateway, campaign: str, kind: str) -> list[dict[str, str]]:
    entries = await gw.redis.xrange(keys.events(keys.shard_tag(campaign)))
    decoded = [{k.decode(): v.decode() for k, v in f.items()} for _id, f in entries]
    return [e for e in decoded if e["type"] == kind]


async def test_a_challenged_claim_passes_once_with_a_valid_pass(gateway_factory: Any) -> None:
    async with gateway_factory(PASS_CLIENT + BUSY_IP) as gw:
        campaign = await gw.put_campaign(stock=10, per_user_limit=10)
        assert (await claim(gw, campaign, "ruth", "phone", None)).status == 201
        before = await challenge_metrics(gw)
        challenged = await claim(gw, campaign, "ruth", "tablet", None)
        assert challenged.status == 403
        assert (await challenged.json())["error"]["code"] == "challenge_required"

        token = fresh_pass("ruth", "tablet")
        passed = await claim(gw, campaign, "ruth", "tablet", token)
        assert passed.status == 201, await passed.text()
        again = await claim(gw, campaign, "ruth", "tablet", token)  # a new request, same pass
        assert again.status == 403
        assert (await again.json())["error"]["code"] == "challenge_required"
        fresh = await claim(gw, campaign, "ruth", "tablet", fresh_pass("ruth", "tablet"))
        assert fresh.status == 201
        assert (await gw.stats(campaign))["granted"] == 3

        after = await challenge_metrics(gw)
        issued = ("gateway_challenges_issued_total", "claim")
        passed_series = ("gateway_challenges_passed_total", "claim")
        reused = ("gateway_challenge_passes_refused_total", "claim", "reused")
        assert after[issued] - before[issued] == 2
        assert after[passed_series] - before[passed_series] == 2
        assert after[reused] - before[reused] == 1
        lifted = await events_of(gw, campaign, "risk.challenge_passed")
        assert [(e["rules"], e["user_id"], e["device_id"]) for e in lifted] == [
            ("busy_ip", "ruth", "tablet")
        ] * 2


async def test_every_bad_pass_is_answered_like_no_pass(gateway_factory: Any) -> None:
    async with gateway_factory(PASS_CLIENT + ROAMING) as gw:
        campaign = await gw.put_campaign(stock=10, per_user_limit=10)
        assert (await claim(gw, campaign, "ruth", "phone", None)).status == 201
        now = time.time()
        bad = {
            "expired": fresh_pass("ruth", "tablet", ttl_s=-1),
            "too_far_ahead": fresh_pass("ruth", "tablet", ttl_s=MAX_AHEAD_S + 30),
            "other user": fresh_pass("eve", "tablet"),
            "other device": fresh_pass("ruth", "phone"),
            "other client": fresh_pass("ruth", "tablet", client="pass-other"),
            "mis-signed": fresh_pass("ruth", "tablet", secret="not-the-secret"),
            "malformed": f"{int(now) + 60}.short.{'0' * 64}",
        }
        before = await challenge_metrics(gw)
        bodies = set()
        for name, token in bad.items():
            response = await claim(gw, campaign, "ruth", "tablet", token)
            assert response.status == 403, name
            body = await response.json()
            assert body["error"]["code"] == "challenge_required", name
            bodies.add(body["error"]["message"])
        assert len(bodies) == 1  # no hint of which check failed
        after = await challenge_metrics(gw)
        refused = {
            reason: after[("gateway_challenge_passes_refused_total", "claim", reason)]
            - before[("gateway_challenge_passes_refused_total", "claim", reason)]
            for reason in ("expired", "too_far_ahead", "bad_signature", "malformed")
        }
        assert refused == {"expired": 1, "too_far_ahead": 1, "bad_signature": 4, "malformed": 1}
        assert (await gw.stats(campaign))["granted"] == 1
        assert await events_of(gw, campaign, "risk.challenge_passed") == []


async def test_a_client_without_a_challenge_secret_accepts_no_pass(gateway_factory: Any) -> None:
    async with gateway_factory(ROAMING) as gw:
        campaign = await gw.put_campaign(stock=10, per_user_limit=10)
        assert (await gw.claim(campaign, user_id="ruth", device_id="phone")).status == 201
        token = mint_pass("", "app", "ruth", "tablet")  # what an empty key would sign
        response = await gw.claim(
            campaign, user_id="ruth", device_id="tablet", headers={"X-Challenge-Pass": token}
        )
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "challenge_required"


async def test_a_pass_never_lifts_a_deny_a_list_entry_or_a_rate_limit(
    gateway_factory: Any,
) -> None:
    config = (
        PASS_CLIENT
        + ROAMING
        + rule("farm", "distinct_users_per_device", 1, "deny")
        + '[limits]\nclaim = [{by = "user", limit = 4, window_s = 60}]\n'
    )
    async with gateway_factory(config) as gw:
        campaign = await gw.put_campaign(stock=10, per_user_limit=10)
        assert (await claim(gw, campaign, "ruth", "phone", None)).status == 201
        # Both rules fire (a second user on the device, ruth's second device): deny wins.
        assert (await claim(gw, campaign, "eve", "tablet", None)).status == 201
        token = fresh_pass("ruth", "tablet")
        denied = await claim(gw, campaign, "ruth", "tablet", token)
        assert denied.status == 403
        assert (await denied.json())["error"]["code"] == "risk_denied"
        # The pass was not spent by the denied request: it still lifts a lone challenge.
        assert (await claim(gw, campaign, "ruth", "laptop", None)).status == 403
        ruth_laptop = fresh_pass("ruth", "laptop")
        assert (await claim(gw, campaign, "ruth", "laptop", ruth_laptop)).status == 201

        # ruth is at her limit of 4 claims a minute: a pass does not lift a 429.
        limited = await claim(gw, campaign, "ruth", "watch", fresh_pass("ruth", "watch"))
        assert limited.status == 429

        response = await gw.admin_call("PUT", "/admin/risk/lists/blocked_users", {"add": ["mal"]})
        assert response.status == 200
        await lists_loaded(gw)
        blocked = await claim(gw, campaign, "mal", "x", fresh_pass("mal", "x"))
        assert (await blocked.json())["error"]["code"] == "risk_denied"
        assert (await gw.stats(campaign))["granted"] == 3


async def lists_loaded(gw: Gateway) -> None:
    services = gw.public.server.app[SERVICES]
    version = int(await gw.redis.get(VERSION_KEY))
    for _ in range(100):
        if services.lists.version == version:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("risk lists not loaded within 2 s")


# -- redemptions ---------------------------------------------------------------------------


async def redeem(gw: Gateway, header: str | None, device: str = "dev") -> Any:
    headers = {"Authorization": "Bearer pass-key", "Idempotency-Key": uuid.uuid4().hex}
    if header is not None:
        headers["X-Challenge-Pass"] = header
    body = {"voucher_code": UNKNOWN_CODE, "user_id": "ruth", "device_id": device}
    return await gw.public.post("/v1/redemptions", json=body, headers=headers)


async def test_a_challenged_redemption_passes_once_with_a_valid_pass(
    gateway_factory: Any,
) -> None:
    config = PASS_CLIENT + rule("guess_challenge", "failed_redemptions_per_ip", 2, "challenge")
    async with gateway_factory(config) as gw:
        assert [(await redeem(gw, None)).status for _ in range(2)] == [404, 404]
        assert (await redeem(gw, None)).status == 403
        token = fresh_pass("ruth", "dev")
        assert (await redeem(gw, fresh_pass("ruth", "other-dev"))).status == 403  # foreign
        lifted = await redeem(gw, token)
        assert lifted.status == 404  # past the challenge: the lookup answers
        again = await redeem(gw, token)
        assert again.status == 403
        assert (await again.json())["error"]["code"] == "challenge_required"
        metrics = await challenge_metrics(gw)
        assert metrics[("gateway_challenges_passed_total", "redeem")] >= 1
        assert metrics[("gateway_challenge_passes_refused_total", "redeem", "reused")] >= 1


# -- the documentation's minting function ----------------------------------------------------


def doc_minting_function() -> str:
    text = (Path(__file__).resolve().parents[2] / "docs/challenges.md").read_text()
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_docs_print_the_minting_function_the_tests_use() -> None:
    printed = doc_minting_function()
    imports = "import hashlib\nimport hmac\nimport secrets\nimport time\n\n\n"
    assert printed == imports + inspect.getsource(mint_pass)
    namespace: dict[str, Any] = {}
    exec(compile(printed, "docs/challenges.md", "exec"), namespace)
    token = namespace["mint_pass"](SECRET, "app", "ruth", "phone", ttl_s=30, now=NOW)
    assert check_pass(SECRET, token, "app", "ruth", "phone", NOW).ok
