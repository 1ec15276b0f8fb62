"""SPEC §2: one Redis round trip per claim decision, with limits, velocity rules (one in shadow)
and risk lists all on, a challenge pass included. Counted on the real server: MONITOR shows
every top-level command (a script's own commands are tagged `lua`), INFO commandstats counts
FCALL calls."""

from __future__ import annotations

import asyncio
import collections
import uuid
from typing import Any

from gateway.app import SERVICES
from gateway.valkey import keys
from risk.challenge import mint_pass
from risk.lists import VERSION_KEY
from supplier_pool.shared_state import BREAKERS_KEY
from tests.gateway.conftest import Gateway
from tests.gateway.test_challenges import PASS_CLIENT, SECRET

CLAIMS = 40
EVERYTHING_ON = """
[limits]
claim = [
  {by = "ip", limit = 1000, window_s = 60},
  {by = "user", limit = 5, window_s = 60},
  {by = "device", limit = 5, window_s = 60},
  {by = "client", limit = 1000, window_s = 3600},
]
[[risk.rules]]
id = "ip_watch"
kind = "claims_per_ip"
threshold = 1
window_s = 60
mode = "shadow"
[[risk.rules]]
id = "device_farm"
kind = "distinct_users_per_device"
threshold = 3
window_s = 600
[[risk.rules]]
id = "roaming_user"
kind = "distinct_devices_per_user"
threshold = 3
window_s = 600
decision = "challenge"
[redemption]
reconcile_interval_s = 60.0
"""
# What the gateway's background tasks may send meanwhile (the reconciler is parked above).
BACKGROUND = {("GET", VERSION_KEY), ("HGETALL", BREAKERS_KEY)}
# Sent once when a client opens a connection (the monitor takes one of the test's), not per call.
HANDSHAKE = {"HELLO", "CLIENT"}
LISTS = {
    "blocked_users": ["mallory", "eve"],
    "blocked_devices": ["burner-1"],
    "blocked_ips": ["10.0.0.0/8", "192.0.2.1"],
    "allowed_users": ["vip"],
}


async def load_lists(gw: Gateway) -> None:
    for name, entries in LISTS.items():
        response = await gw.admin_call("PUT", f"/admin/risk/lists/{name}", {"add": entries})
        assert response.status == 200
    services = gw.public.server.app[SERVICES]
    version = int(await gw.redis.get(VERSION_KEY))
    for _ in range(50):  # refreshed every 0.5 s: loaded within 1 s
        if services.lists.version == version:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("risk lists not loaded within 1 s")


async def top_level_commands(gw: Gateway, work: Any) -> list[tuple[str, ...]]:
    """Run `work` under MONITOR; return every command a client sent meanwhile (no script's)."""
    sentinel = f"round-trips-{uuid.uuid4().hex}"
    seen: list[tuple[str, ...]] = []
    async with gw.redis.monitor() as monitor:
        await work()
        await gw.redis.echo(sentinel)
        async with asyncio.timeout(10):
            while True:
                entry = await monitor.next_command()
                words = tuple(entry["command"].split())
                if words == ("ECHO", sentinel):
                    return seen
                if entry["client_type"] != "lua" and words[0] not in HANDSHAKE:
                    seen.append(words)


async def fcall_calls(gw: Gateway) -> int:
    return int((await gw.redis.info("commandstats"))["cmdstat_fcall"]["calls"])


async def test_a_claim_is_one_fcall_with_limits_rules_and_lists_on(
    gateway_factory: Any,
) -> None:
    async with gateway_factory(EVERYTHING_ON) as gw:
        campaign = await gw.put_campaign(stock=1000)
        await load_lists(gw)
        claim_function = gw.public.server.app[SERVICES].scripts.functions["claim"]
        statuses: list[int] = []

        async def claims() -> None:
            for i in range(CLAIMS):
                response = await gw.claim(campaign, user_id=f"user-{i}", device_id=f"dev-{i}")
                statuses.append(response.status)

        before = await fcall_calls(gw)
        commands = await top_level_commands(gw, claims)
        assert await fcall_calls(gw) - before == CLAIMS
        assert statuses == [201] * CLAIMS
        by_kind = collections.Counter(words[:2] for words in commands)
        assert by_kind.pop(("FCALL", claim_function)) == CLAIMS
        assert set(by_kind) <= BACKGROUND, by_kind
        assert not any(keys.shard_tag(campaign) in " ".join(w) for w in by_kind)
        # Every rule really ran: the shadow rule fired on every claim after the first.
        entries = await gw.redis.xrange(keys.events(keys.shard_tag(campaign)))
        hits = [f for _id, f in entries if f[b"type"] == b"risk.hit"]
        assert len(hits) == CLAIMS - 1 and {f[b"rules"] for f in hits} == {b"ip_watch"}


async def test_rejections_decided_in_redis_are_one_fcall_too(gateway_factory: Any) -> None:
    async with gateway_factory(EVERYTHING_ON) as gw:
        campaign = await gw.put_campaign(stock=1000, per_user_limit=10)
        await load_lists(gw)
        claim_function = gw.public.server.app[SERVICES].scripts.functions["claim"]
        statuses: list[int] = []

        async def claims() -> None:
            # Three users on one device, then a fourth (device_farm denies), then one user
            # roaming to a fourth device (roaming_user challenges): five decisions.
            for who in [
                ("a", "farm"),
                ("b", "farm"),
                ("c", "farm"),
                ("d", "farm"),
                ("a", "d2"),
                ("a", "d3"),
                ("a", "d4"),
            ]:
                response = await gw.claim(campaign, user_id=who[0], device_id=who[1])
                statuses.append(response.status)

        commands = await top_level_commands(gw, claims)
        assert statuses == [201, 201, 201, 403, 201, 201, 403]
        by_kind = collections.Counter(words[:2] for words in commands)
        assert by_kind.pop(("FCALL", claim_function)) == len(statuses)
        assert set(by_kind) <= BACKGROUND, by_kind


async def test_a_challenge_pass_is_spent_inside_the_claims_one_fcall(
    gateway_factory: Any,
) -> None:
    config = EVERYTHING_ON + PASS_CLIENT
    async with gateway_factory(config) as gw:
        campaign = await gw.put_campaign(stock=1000, per_user_limit=10)
        await load_lists(gw)
        claim_function = gw.public.server.app[SERVICES].scripts.functions["claim"]
        statuses: list[int] = []

        async def claims() -> None:
            # One user roaming to a fourth device (roaming_user challenges), then again with
            # a pass for that device: five decisions, the last one lifted.
            token = mint_pass(SECRET, "pass-app", "a", "d4")
            lifted = {"X-Challenge-Pass": token}
            for device, header in [("d1", {}), ("d2", {}), ("d3", {}), ("d4", {}), ("d4", lifted)]:
                response = await gw.claim(
                    campaign, user_id="a", device_id=device, api_key="pass-key", headers=header
                )
                statuses.append(response.status)

        before = await fcall_calls(gw)
        commands = await top_level_commands(gw, claims)
        assert statuses == [201, 201, 201, 403, 201]
        assert await fcall_calls(gw) - before == len(statuses)
        by_kind = collections.Counter(words[:2] for words in commands)
        assert by_kind.pop(("FCALL", claim_function)) == len(statuses)
        assert set(by_kind) <= BACKGROUND, by_kind
        entries = await gw.redis.xrange(keys.events(keys.shard_tag(campaign)))
        passed = [f for _id, f in entries if f[b"type"] == b"risk.challenge_passed"]
        assert [f[b"rules"] for f in passed] == [b"roaming_user"]


async def test_period_budgets_cost_no_extra_round_trip(gateway_factory: Any) -> None:
    """daily_stock, per_user_daily_limit and budget are read and counted inside the one FCALL,
    granted or refused (budget, the day's stock, a user's day)."""
    async with gateway_factory(EVERYTHING_ON) as gw:
        campaign = await gw.put_campaign(
            ends_at="2035-01-01T00:00:00Z",  # a daily field allows 20 years at most
            stock=1000,
            per_user_limit=10,
            daily_stock=CLAIMS,
            per_user_daily_limit=2,
            timezone="Europe/Berlin",
            unit_cost=5,
            budget=5 * (CLAIMS + 2),
        )
        await load_lists(gw)
        claim_function = gw.public.server.app[SERVICES].scripts.functions["claim"]
        statuses: list[int] = []

        async def claims() -> None:
            # A user's third claim today is refused; the last finds the day's stock gone (the
            # in-process flag would answer a claim after it).
            for i in range(CLAIMS + 2):
                who = "twice" if i < 3 else f"user-{i}"
                response = await gw.claim(campaign, user_id=who, device_id=f"dev-{i}")
                statuses.append(response.status)

        before = await fcall_calls(gw)
        commands = await top_level_commands(gw, claims)
        assert statuses == [201, 201, 409] + [201] * (CLAIMS - 2) + [409]
        assert await fcall_calls(gw) - before == CLAIMS + 2
        by_kind = collections.Counter(words[:2] for words in commands)
        assert by_kind.pop(("FCALL", claim_function)) == CLAIMS + 2
        assert set(by_kind) <= BACKGROUND, by_kind
        stats = await gw.stats(campaign)
        assert stats["today"] == {"granted": CLAIMS, "daily_stock_left": 0}
        assert stats["budget_spent"] == 5 * CLAIMS
        assert stats["rejected"] == {"limit_reached": 1, "daily_stock_exhausted": 1}


async def test_a_delivered_redemption_is_the_guard_and_the_redeem_call_only(
    gateway: Gateway,
) -> None:
    """A voucher (and a card secret) delivered at once is answered from the redeem call's
    reply: no read of the redemption record it just wrote."""
    campaign = await gateway.put_campaign(stock=5, per_user_limit=5)
    codes = [await gateway.grant(campaign, device_id=f"dev-{i}") for i in range(3)]
    functions = gateway.public.server.app[SERVICES].scripts.functions
    bodies: list[dict[str, Any]] = []

    async def redemptions() -> None:
        for code in codes:
            response = await gateway.redeem(code)
            assert response.status == 200, await response.text()
            bodies.append(await response.json())

    commands = await top_level_commands(gateway, redemptions)
    by_kind = collections.Counter(words[:2] for words in commands)
    assert by_kind.pop(("FCALL", functions["redeem_guard"])) == 3
    assert by_kind.pop(("FCALL", functions["redeem"])) == 3
    assert set(by_kind) <= BACKGROUND, by_kind
    assert [(b["voucher_code"], b["status"], b["delivery"]) for b in bodies] == [
        (code, "delivered", {"kind": "voucher"}) for code in codes
    ]
