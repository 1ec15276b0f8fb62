"""SPEC §6 risk engine at the gateway: each velocity rule kind at its threshold, shadow mode,
and the block/allow lists managed through the admin API."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import codes
from gateway.errors import ApiError
from gateway.models import Caller, RedeemRequest
from gateway.valkey import keys
from risk.lists import VERSION_KEY, list_key
from tests.gateway.conftest import Gateway, redeem_desk_on

UNKNOWN_CODE = "GUESS0000000000000000"


def rule(
    rule_id: str, kind: str, threshold: int, decision: str = "deny", mode: str = "enforce"
) -> str:
    return (
        f'[[risk.rules]]\nid = "{rule_id}"\nkind = "{kind}"\nthreshold = {threshold}\n'
        f'window_s = 60\ndecision = "{decision}"\nmode = "{mode}"\n'
    )


async def risk_decisions(gw: Gateway, rule_id: str, decision: str, mode: str) -> float:
    """gateway_risk_decisions_total for one (rule, decision, mode), read from GET /metrics."""
    response = await gw.public.get("/metrics")
    wanted = {"rule": rule_id, "decision": decision, "mode": mode}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            if sample.name == "gateway_risk_decisions_total" and sample.labels == wanted:
                return float(sample.value)
    return 0.0


async def risk_hits(gw: Gateway, tag: str) -> list[dict[str, str]]:
    entries = await gw.redis.xrange(keys.events(tag))
    events = [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in entries]
    return [event for event in events if event["type"] == "risk.hit"]


async def assert_refused(response: Any, status: int, code: str, *secrets: str) -> None:
    """The refusal carries its code and nothing that names the rule or list behind it."""
    assert response.status == status, await response.text()
    text = await response.text()
    assert (await response.json())["error"]["code"] == code
    for secret in secrets:
        assert secret not in text


# -- claim-route rules ---------------------------------------------------------------------

# kind: threshold, requests admitted before it fires, the request it fires on, requests that
# are still admitted afterwards (a member already counted, another identity).
CLAIM_KINDS = {
    "claims_per_ip": (3, [("u1", "d1"), ("u2", "d2"), ("u3", "d3")], ("u4", "d4"), []),
    "distinct_users_per_device": (
        2,
        [("u1", "shared"), ("u2", "shared")],
        ("u3", "shared"),
        [("u1", "shared"), ("u3", "own")],
    ),
    "distinct_devices_per_user": (
        2,
        [("roamer", "d1"), ("roamer", "d2")],
        ("roamer", "d3"),
        [("roamer", "d1"), ("other", "d3")],
    ),
}
CODES = {"deny": "risk_denied", "challenge": "challenge_required"}


@pytest.mark.parametrize("decision", ["deny", "challenge"])
@pytest.mark.parametrize("kind", list(CLAIM_KINDS))
async def test_claim_rule_fires_at_its_threshold_without_naming_itself(
    gateway_factory: Any, kind: str, decision: str
) -> None:
    threshold, before, firing, after = CLAIM_KINDS[kind]
    rule_id = f"{kind}_{decision}_rule"
    async with gateway_factory(rule(rule_id, kind, threshold, decision)) as gw:
        campaign = await gw.put_campaign(stock=100, per_user_limit=10)
        counted = await risk_decisions(gw, rule_id, decision, "enforce")
        for user, device in before:
            assert (await gw.claim(campaign, user_id=user, device_id=device)).status == 201
        refused = await gw.claim(campaign, user_id=firing[0], device_id=firing[1])
        await assert_refused(refused, 403, CODES[decision], rule_id, kind, "threshold")
        for user, device in after:
            assert (await gw.claim(campaign, user_id=user, device_id=device)).status == 201
        assert await risk_decisions(gw, rule_id, decision, "enforce") == counted + 1
        hits = await risk_hits(gw, keys.shard_tag(campaign))
        assert [(h["rules"], h["decision"], h["user_id"]) for h in hits] == [
            (rule_id, decision, firing[0])
        ]
        stats = await gw.stats(campaign)
        assert stats["granted"] == len(before) + len(after)
        assert stats["rejected"] == {CODES[decision]: 1}


# -- redeem-route rules --------------------------------------------------------------------


@pytest.mark.parametrize("per", ["ip", "device"])
async def test_failed_redemptions_rule_locks_out_with_429_at_its_threshold(
    gateway_factory: Any, per: str
) -> None:
    rule_id = f"guessing_per_{per}"
    kind = f"failed_redemptions_per_{per}"
    async with gateway_factory(rule(rule_id, kind, 3)) as gw:
        campaign = await gw.put_campaign(stock=5)
        code = await gw.grant(campaign, user_id="ruth", device_id="rig")
        counted = await risk_decisions(gw, rule_id, "deny", "enforce")
        statuses = [(await gw.redeem(UNKNOWN_CODE, device_id="rig")).status for _ in range(3)]
        assert statuses == [404] * 3
        locked = await gw.redeem(UNKNOWN_CODE, device_id="rig")
        await assert_refused(locked, 429, "rate_limited", rule_id, kind)
        assert 1 <= int(locked.headers["Retry-After"]) <= 60
        # Locked out means every code, a real one included, from that IP or device.
        await assert_refused(await gw.redeem(code, device_id="rig"), 429, "rate_limited")
        # The same IP on another device: locked only by the per-IP rule.
        elsewhere = await gw.redeem(UNKNOWN_CODE, device_id="other-phone")
        assert elsewhere.status == (429 if per == "ip" else 404)
        assert await risk_decisions(gw, rule_id, "deny", "enforce") == counted + 1
        hits = await risk_hits(gw, keys.GUARD_TAG)
        assert [(h["rules"], h["decision"]) for h in hits] == [(rule_id, "deny")]
        assert (await gw.stats(campaign))["redeemed"] == 0


async def test_failed_redemptions_rule_with_challenge_asks_for_a_challenge(
    gateway_factory: Any,
) -> None:
    async with gateway_factory(
        rule("guess_challenge", "failed_redemptions_per_ip", 2, "challenge")
    ) as gw:
        assert [(await gw.redeem(UNKNOWN_CODE)).status for _ in range(2)] == [404, 404]
        refused = await gw.redeem(UNKNOWN_CODE)
        await assert_refused(refused, 403, "challenge_required", "guess_challenge")


# -- shadow mode ---------------------------------------------------------------------------


async def test_shadow_claim_rule_never_blocks_but_is_counted_and_evented(
    gateway_factory: Any,
) -> None:
    config = rule("ip_shadow", "claims_per_ip", 2, mode="shadow")
    async with gateway_factory(config) as gw:
        campaign = await gw.put_campaign(stock=100)
        counted = await risk_decisions(gw, "ip_shadow", "deny", "shadow")
        assert [(await gw.claim(campaign)).status for _ in range(5)] == [201] * 5
        assert await risk_decisions(gw, "ip_shadow", "deny", "shadow") == counted + 3
        assert await risk_decisions(gw, "ip_shadow", "deny", "enforce") == 0
        hits = await risk_hits(gw, keys.shard_tag(campaign))
        assert [(h["rules"], h["decision"]) for h in hits] == [("ip_shadow", "shadow")] * 3
        assert all(h["campaign_id"] == campaign and h["ip"] == "127.0.0.1" for h in hits)


async def test_shadow_redeem_rule_never_blocks_but_is_counted_and_evented(
    gateway_factory: Any,
) -> None:
    config = rule("guess_shadow", "failed_redemptions_per_device", 2, mode="shadow")
    async with gateway_factory(config) as gw:
        counted = await risk_decisions(gw, "guess_shadow", "deny", "shadow")
        statuses = [(await gw.redeem(UNKNOWN_CODE, device_id="rig")).status for _ in range(5)]
        assert statuses == [404] * 5
        assert await risk_decisions(gw, "guess_shadow", "deny", "shadow") == counted + 3
        hits = await risk_hits(gw, keys.GUARD_TAG)
        assert [(h["rules"], h["decision"]) for h in hits] == [("guess_shadow", "shadow")] * 3


async def test_shadow_and_enforced_redeem_rules_firing_together_leave_one_event_per_mode(
    gateway_factory: Any,
) -> None:
    config = rule("guess_watch", "failed_redemptions_per_device", 2, mode="shadow") + rule(
        "guess_lock", "failed_redemptions_per_ip", 2
    )
    async with gateway_factory(config) as gw:
        statuses = [(await gw.redeem(UNKNOWN_CODE, device_id="rig")).status for _ in range(3)]
        assert statuses == [404, 404, 429]
        hits = await risk_hits(gw, keys.GUARD_TAG)
        assert [(h["rules"], h["decision"]) for h in hits] == [
            ("guess_lock", "deny"),
            ("guess_watch", "shadow"),
        ]


async def test_shadow_and_enforced_rules_firing_together_leave_one_event_per_mode(
    gateway_factory: Any,
) -> None:
    # The ledger counts risk hits by rule and mode from the event's decision alone.
    config = rule("watch_ip", "claims_per_ip", 1, mode="shadow") + rule(
        "one_user_per_device", "distinct_users_per_device", 1, "challenge"
    )
    async with gateway_factory(config) as gw:
        campaign = await gw.put_campaign(stock=100)
        assert (await gw.claim(campaign, user_id="a", device_id="shared")).status == 201
        refused = await gw.claim(campaign, user_id="b", device_id="shared")
        await assert_refused(refused, 403, "challenge_required")
        hits = await risk_hits(gw, keys.shard_tag(campaign))
        assert [(h["rules"], h["decision"]) for h in hits] == [
            ("one_user_per_device", "challenge"),
            ("watch_ip", "shadow"),
        ]


# -- lists ---------------------------------------------------------------------------------


async def put_list(
    gw: Gateway, name: str, add: list[Any] | None = None, remove: list[Any] | None = None
) -> Any:
    return await gw.admin_call(
        "PUT", f"/admin/risk/lists/{name}", {"add": add or [], "remove": remove or []}
    )


async def claims_answer_within(
    gw: Gateway, campaign: str, status: int, seconds: float = 1.0, **who: str
) -> Any:
    """Claim until the answer has `status`; fail if that takes longer than `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        response = await gw.claim(campaign, **who)
        if response.status == status:
            return response
        assert loop.time() < deadline, f"still {response.status} after {seconds} s"
        await asyncio.sleep(0.05)


LISTED = {
    "blocked_users": ("mallory", {"user_id": "mallory"}),
    "blocked_devices": ("burner", {"device_id": "burner"}),
    "blocked_ips": ("127.0.0.1", {}),
    "blocked_ips/cidr": ("127.0.0.0/8", {}),
}


@pytest.mark.parametrize("case", list(LISTED))
async def test_a_listed_entry_is_denied_within_a_second_and_removal_restores(
    gateway: Gateway, case: str
) -> None:
    name = case.split("/")[0]
    entry, who = LISTED[case]
    campaign = await gateway.put_campaign(stock=1000, per_user_limit=100)
    assert (await gateway.claim(campaign, **who)).status == 201
    counted = await risk_decisions(gateway, name, "deny", "enforce")
    added = await put_list(gateway, name, add=[entry])
    assert added.status == 200
    assert await added.json() == {"list": name, "added": 1, "removed": 0, "size": 1}
    denied = await claims_answer_within(gateway, campaign, 403, **who)
    await assert_refused(denied, 403, "risk_denied", name, entry)
    if who:  # everyone else still gets through
        assert (await gateway.claim(campaign)).status == 201
    assert await risk_decisions(gateway, name, "deny", "enforce") >= counted + 1
    assert (await put_list(gateway, name, remove=[entry])).status == 200
    await claims_answer_within(gateway, campaign, 201, **who)


async def test_allowed_users_bypass_velocity_rules_but_not_block_lists(
    gateway_factory: Any,
) -> None:
    async with gateway_factory(rule("one_claim_per_ip", "claims_per_ip", 1)) as gw:
        campaign = await gw.put_campaign(stock=100, per_user_limit=10)
        assert (await gw.claim(campaign)).status == 201
        await assert_refused(await gw.claim(campaign, user_id="vip"), 403, "risk_denied")
        assert (await put_list(gw, "allowed_users", add=["vip"])).status == 200
        await claims_answer_within(gw, campaign, 201, user_id="vip")
        assert [(await gw.claim(campaign, user_id="vip")).status for _ in range(3)] == [201] * 3
        await assert_refused(await gw.claim(campaign, user_id="nobody"), 403, "risk_denied")
        assert (await put_list(gw, "blocked_users", add=["vip"])).status == 200
        await claims_answer_within(gw, campaign, 403, user_id="vip")


async def test_block_lists_also_deny_redemptions(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=5)
    code = await gateway.grant(campaign, user_id="mallory")
    assert (await put_list(gateway, "blocked_users", add=["mallory"])).status == 200
    await asyncio.sleep(1.0)
    await assert_refused(await gateway.redeem(code, user_id="mallory"), 403, "risk_denied")


BAD_UPDATES = [
    ("blocked_ips", {"add": ["10.0.0.1/8"]}),  # host bits set
    ("blocked_ips", {"add": ["999.0.0.1"]}),
    ("blocked_ips", {"add": ["example.com"]}),
    ("blocked_ips", {"remove": [""]}),
    ("blocked_users", {"add": [""]}),
    ("blocked_users", {"add": ["x" * 129]}),
    ("blocked_devices", {"add": ["tab\there"]}),
    ("allowed_users", {"add": [7]}),
    ("allowed_users", {"add": "vip"}),
    ("blocked_users", {"add": ["a"], "drop": ["b"]}),
    ("blocked_users", {"add": ["same"], "remove": ["same"]}),
    ("blocked_users", {"add": ["fine", "bad\x00"]}),
]


@pytest.mark.parametrize(("name", "body"), BAD_UPDATES)
async def test_bad_list_entries_are_400_and_change_nothing(
    gateway: Gateway, name: str, body: dict[str, Any]
) -> None:
    response = await gateway.admin_call("PUT", f"/admin/risk/lists/{name}", body)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_request"
    assert await gateway.redis.scard(list_key(name)) == 0
    assert await gateway.redis.get(VERSION_KEY) is None


async def test_unknown_list_is_404_and_the_admin_token_is_required(gateway: Gateway) -> None:
    response = await put_list(gateway, "blocked_cats", add=["tom"])
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "list_not_found"
    anonymous = await gateway.admin.put("/admin/risk/lists/blocked_users", json={"add": ["x"]})
    assert anonymous.status == 401
    assert await gateway.redis.scard(list_key("blocked_users")) == 0


# -- the lockout's local memory and its concurrency ----------------------------------------


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_local_lockout_memory_never_outlives_each_rules_own_retry(
    gateway_factory: Any,
) -> None:
    """Two deny rules fire together with different retries: each key is remembered for its own."""
    config = rule("slow_ip", "failed_redemptions_per_ip", 2).replace(
        "window_s = 60", "window_s = 600"
    ) + rule("fast_device", "failed_redemptions_per_device", 2)
    async with gateway_factory(config) as gw:
        clock = FakeClock(float(int(time.time()) - 3600))
        desk = redeem_desk_on(gw, clock)

        async def attempt(ip: str) -> str:
            request = RedeemRequest(voucher_code=UNKNOWN_CODE, user_id="u", device_id="rig")
            with pytest.raises(ApiError) as refused:
                await desk.redeem(request, Caller("app", ip, "r"), uuid.uuid4().hex)
            return refused.value.code

        t0 = clock.now
        assert [await attempt("198.51.100.1") for _ in range(2)] == ["voucher_not_found"] * 2
        clock.now = t0 + 1
        assert await attempt("198.51.100.1") == "rate_limited"  # both rules fire
        clock.now = t0 + 61  # the device's failures have left its 60 s window
        assert await attempt("198.51.100.2") == "voucher_not_found"
        assert await attempt("198.51.100.1") == "rate_limited"  # the IP's 600 s have not


GUESSER_KEY = bytes(32)  # not the gateway's key: these codes pass the check, hold no voucher


async def test_a_suspected_guesser_bursting_concurrently_is_locked_out_at_exactly_50(
    gateway: Gateway,
) -> None:
    # Half the threshold makes an identity a suspect: from then on each attempt is counted in
    # the guard call itself, so 200 concurrent guesses cannot all pass before any is counted.
    async def guess(i: int) -> int:
        response = await gateway.redeem(
            codes.voucher_code_for("00", GUESSER_KEY, "guesser", "camp", str(i)),
            user_id=f"u{i}",
            device_id=f"d{i}",
        )
        return int(response.status)

    warmup = [await guess(i) for i in range(25)]
    assert warmup == [404] * 25
    statuses = collections.Counter(await asyncio.gather(*(guess(i) for i in range(25, 225))))
    assert statuses == {404: 25, 429: 175}, statuses


async def test_honest_concurrent_redemptions_from_one_ip_are_never_locked_out(
    gateway: Gateway,
) -> None:
    campaign = await gateway.put_campaign(stock=120, per_user_limit=1)
    vouchers = [await gateway.grant(campaign, user_id=f"h{i}") for i in range(120)]
    responses = await asyncio.gather(
        *(gateway.redeem(code, user_id=f"h{i}") for i, code in enumerate(vouchers))
    )
    assert [r.status for r in responses] == [200] * 120
