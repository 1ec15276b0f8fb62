"""SPEC §6 rate limits at the gateway: exact per dimension and route, exact across a window
boundary (injected clock), shared by workers, answered locally once over, and bound to the
real client IP behind proxies."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import SERVICES, create_app
from gateway.claims.desk import FIELD_WINDOW_MAX_HITS
from gateway.errors import ApiError
from gateway.models import Caller, ClaimRequest, RedeemRequest
from gateway.settings import parse
from gateway.valkey import keys
from tests.gateway.conftest import (
    API_KEY,
    BASE_CONFIG,
    OTHER_KEY,
    Gateway,
    claim_desk_on,
    redeem_desk_on,
)
from tests.support.served import ADMIN_TOKEN, scrape_until, serve
from tests.support.served import API_KEY as SERVED_KEY

LIMIT = 5
WINDOW_S = 60
UNKNOWN_CODE = "GUESS0000000000000000"  # fails its check characters: a failed redemption


def limits(route: str, by: str, limit: int = LIMIT, window_s: int = WINDOW_S) -> str:
    return f'[limits]\n{route} = [{{by = "{by}", limit = {limit}, window_s = {window_s}}}]\n'


async def assert_rate_limited(response: Any, limit: int = LIMIT) -> None:
    """429 rate_limited with Retry-After and every RateLimit-* header of SPEC §6."""
    assert response.status == 429, await response.text()
    assert (await response.json())["error"]["code"] == "rate_limited"
    headers = response.headers
    assert 1 <= int(headers["Retry-After"]) <= WINDOW_S
    assert headers["RateLimit-Limit"] == str(limit)
    assert headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(headers["RateLimit-Reset"]) <= WINDOW_S


def identities(by: str, i: int) -> dict[str, str]:
    """Request i's user and device: shared on the limited dimension, fresh on the others."""
    return {
        "user_id": "same-user" if by == "user" else f"user-{i}",
        "device_id": "same-device" if by == "device" else f"device-{i}",
    }


def an_unlimited_neighbour(by: str) -> dict[str, Any]:
    """Differs from the limited requests on the limited dimension only."""
    if by == "client":
        return {"api_key": OTHER_KEY, **identities(by, 999)}
    if by == "user":
        return {"user_id": "other-user", "device_id": "device-999"}
    return {"user_id": "user-999", "device_id": "other-device"}


@pytest.mark.parametrize("by", ["ip", "user", "device", "client"])
async def test_claim_limit_admits_exactly_the_limit_then_429_with_ratelimit_headers(
    gateway_factory: Any, by: str
) -> None:
    async with gateway_factory(limits("claim", by)) as gw:
        campaign = await gw.put_campaign(stock=100, per_user_limit=100)
        statuses = [(await gw.claim(campaign, **identities(by, i))).status for i in range(LIMIT)]
        assert statuses == [201] * LIMIT
        await assert_rate_limited(await gw.claim(campaign, **identities(by, LIMIT)))
        await assert_rate_limited(await gw.claim(campaign, **identities(by, LIMIT + 1)))
        if by != "ip":  # the test client has one IP; see the X-Forwarded-For tests for others
            assert (await gw.claim(campaign, **an_unlimited_neighbour(by))).status == 201
        stats = await gw.stats(campaign)
        assert stats["granted"] == LIMIT + (by != "ip")


@pytest.mark.parametrize("by", ["ip", "user", "device", "client"])
async def test_redeem_limit_admits_exactly_the_limit_then_429_with_ratelimit_headers(
    gateway_factory: Any, by: str
) -> None:
    async with gateway_factory(limits("redeem", by)) as gw:
        statuses = [
            (await gw.redeem(UNKNOWN_CODE, **identities(by, i))).status for i in range(LIMIT)
        ]
        assert statuses == [404] * LIMIT
        await assert_rate_limited(await gw.redeem(UNKNOWN_CODE, **identities(by, LIMIT)))
        if by != "ip":
            neighbour = await gw.redeem(UNKNOWN_CODE, **an_unlimited_neighbour(by))
            assert neighbour.status == 404


async def test_redeem_limit_counts_delivered_redemptions_too(gateway_factory: Any) -> None:
    async with gateway_factory(limits("redeem", "user", limit=2)) as gw:
        campaign = await gw.put_campaign(stock=5, per_user_limit=5)
        codes = [await gw.grant(campaign, user_id="ruth") for _ in range(3)]
        assert (await gw.redeem(codes[0])).status == 200
        assert (await gw.redeem(codes[1])).status == 200
        await assert_rate_limited(await gw.redeem(codes[2]), limit=2)
        assert (await gw.stats(campaign))["redeemed"] == 2


async def test_a_large_redeem_limit_keeps_a_coarse_log_and_holds_its_bound(
    gateway_factory: Any,
) -> None:
    # limit 130 is above the exact log's 128: groups of 130 // 64 = 2 hits, so the route
    # admits at most 130 and refuses nothing below 128.
    config = (
        '[limits]\nredeem = [{by = "client", limit = 130, window_s = 60}]\n'
        'claim = [{by = "ip", limit = 1000, window_s = 60}]\n'
    )
    async with gateway_factory(config) as gw:
        campaign = await gw.put_campaign(stock=140, per_user_limit=1)
        codes = [await gw.grant(campaign, user_id=f"u{i}", device_id=f"d{i}") for i in range(140)]
        statuses = [
            (await gw.redeem(code, user_id=f"u{i}", device_id=f"d{i}")).status
            for i, code in enumerate(codes)
        ]
        admitted = statuses.count(200)
        assert 128 <= admitted <= 130, statuses
        assert statuses[:admitted] == [200] * admitted
        assert set(statuses[admitted:]) == {429}
        assert (await gw.stats(campaign))["redeemed"] == admitted
        [key] = [k async for k in gw.redis.scan_iter(match="*rl:redeem:client:60g2:*")]
        # 65 groups' starts and the tail, not one entry per hit.
        assert await gw.redis.llen(key) <= admitted // 2 + 2


async def test_a_million_per_hour_redeem_limit_costs_a_few_entries(gateway_factory: Any) -> None:
    config = '[limits]\nredeem = [{by = "device", limit = 1000000, window_s = 3600}]\n'
    async with gateway_factory(config) as gw:
        campaign = await gw.put_campaign(stock=30, per_user_limit=30)
        codes = [await gw.grant(campaign, user_id="ruth") for _ in range(30)]
        assert [(await gw.redeem(code)).status for code in codes] == [200] * 30
        [key] = [k async for k in gw.redis.scan_iter(match="*rl:redeem:device:3600g15625:*")]
        assert await gw.redis.llen(key) == 2  # one group's start and its tail "30:..."
        assert (await gw.redis.lindex(key, -1)).startswith(b"30:")


async def limit_keys(gw: Gateway, by: str) -> list[bytes]:
    return [key async for key in gw.redis.scan_iter(match=f"*rl:claim:{by}:*")]


async def test_a_small_claimant_limit_keeps_its_log_in_the_allowance_field(
    gateway_factory: Any,
) -> None:
    """A user limit of at most FIELD_WINDOW_MAX_HITS rides in the user's allowance field: no
    key of its own, and a claim refused past the limits (409 limit_reached) still counts."""
    async with gateway_factory(limits("claim", "user", limit=2)) as gw:
        campaign = await gw.put_campaign(stock=10, per_user_limit=1)
        assert (await gw.claim(campaign, user_id="kim")).status == 201
        refused = await gw.claim(campaign, user_id="kim")
        assert (await refused.json())["error"]["code"] == "limit_reached"
        await assert_rate_limited(await gw.claim(campaign, user_id="kim"), limit=2)
        assert await limit_keys(gw, "user") == []
        field = keys.allowance_field("u", "kim")
        stored = await gw.redis.hget(keys.campaign(keys.shard_tag(campaign), campaign), field)
        grants, *hits = stored.decode().split(",")
        assert grants == "1" and len(hits) == 2  # the grant and the refusal; not the 429
        assert all(abs(int(hit) - time.time() * 1000) < 60_000 for hit in hits)


async def test_a_claimant_limit_above_the_field_size_keeps_a_list_log(
    gateway_factory: Any,
) -> None:
    big = FIELD_WINDOW_MAX_HITS + 1
    async with gateway_factory(limits("claim", "device", limit=big)) as gw:
        campaign = await gw.put_campaign(stock=100, per_user_limit=100)
        statuses = [(await gw.claim(campaign, device_id="tab")).status for _ in range(big)]
        assert statuses == [201] * big
        await assert_rate_limited(await gw.claim(campaign, device_id="tab"), limit=big)
        [log] = await limit_keys(gw, "device")
        assert await gw.redis.llen(log) == big


async def test_a_field_limit_that_refuses_takes_the_hit_back_out_of_the_ip_log(
    gateway_factory: Any,
) -> None:
    """By IP (a list) then by user (a field): the user limit's 429 leaves the IP log as it
    was, so the IP's three slots go to three grants."""
    both = (
        '[limits]\nclaim = [{by = "ip", limit = 3, window_s = 60}, '
        '{by = "user", limit = 1, window_s = 60}]\n'
    )
    async with gateway_factory(both) as gw:
        campaign = await gw.put_campaign(stock=100, per_user_limit=100)
        assert (await gw.claim(campaign, user_id="ann")).status == 201
        await assert_rate_limited(await gw.claim(campaign, user_id="ann"), limit=1)
        [ip_log] = await limit_keys(gw, "ip")
        assert await gw.redis.llen(ip_log) == 1
        assert [(await gw.claim(campaign, user_id=u)).status for u in ("bo", "cy")] == [201, 201]
        await assert_rate_limited(await gw.claim(campaign, user_id="di"), limit=3)


async def test_two_limits_on_one_claimant_share_its_field_log(gateway_factory: Any) -> None:
    """2 per 60 s and 3 per 120 s by device, one log: the third claim in a minute is refused
    by the first limit (RateLimit-Limit 2), and the device's other limits keep no key."""
    two = (
        '[limits]\nclaim = [{by = "device", limit = 2, window_s = 60}, '
        '{by = "device", limit = 3, window_s = 120}, {by = "user", limit = 5, window_s = 60}]\n'
    )
    async with gateway_factory(two) as gw:
        campaign = await gw.put_campaign(stock=100, per_user_limit=100, per_device_limit=100)
        first = [(await gw.claim(campaign, device_id="pad")).status for _ in range(2)]
        assert first == [201, 201]
        await assert_rate_limited(await gw.claim(campaign, device_id="pad"), limit=2)
        assert (await gw.claim(campaign, device_id="other-pad")).status == 201
        assert await limit_keys(gw, "device") == [] and await limit_keys(gw, "user") == []
        field = keys.allowance_field("d", "pad")
        stored = await gw.redis.hget(keys.campaign(keys.shard_tag(campaign), campaign), field)
        assert stored.decode().split(",")[0] == "2"


# -- window boundaries, with the desks' clock injected -------------------------------------


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def minute_aligned() -> float:
    """A whole minute in the recent past: t0 + 60 is where a fixed window would reset."""
    return float(int(time.time()) // 60 * 60 - 600)


async def admitted_in_burst(attempt: Any, clock: FakeClock, at: float, n: int) -> list[str]:
    """Fire n requests at one instant; return the Retry-After of each 429, '' if admitted."""
    clock.now = at
    answers = []
    for _ in range(n):
        try:
            await attempt(uuid.uuid4().hex[:12])
            answers.append("")
        except ApiError as exc:
            assert exc.status == 429 and exc.code == "rate_limited", (exc.status, exc.code)
            assert exc.headers["RateLimit-Limit"] == str(LIMIT)
            answers.append(exc.headers["Retry-After"])
    return answers


async def check_boundary_burst(attempt: Any, clock: FakeClock) -> None:
    """Bursts of 10 around a window boundary; limit 5 per 60 s admits exactly 5 per window."""
    t0 = clock.now
    late = await admitted_in_burst(attempt, clock, t0 + 59.5, 10)
    assert late == [""] * LIMIT + ["60"] * LIMIT  # the five leave at t0 + 119.5
    # A fixed window would reset here and admit 5 more; the sliding window admits none.
    assert await admitted_in_burst(attempt, clock, t0 + 60.5, 10) == ["59"] * 10
    assert await admitted_in_burst(attempt, clock, t0 + 119.0, 10) == ["1"] * 10
    # The local pre-filter never outlives the window: at t0 + 119.5 all five slots are free.
    again = await admitted_in_burst(attempt, clock, t0 + 119.5, 10)
    assert again.count("") == LIMIT and again[:LIMIT] == [""] * LIMIT


def services_of(gw: Gateway) -> Any:
    return gw.public.server.app[SERVICES]


@pytest.mark.parametrize("by", ["ip", "user"])  # a list log, and a log in the user's field
async def test_claim_burst_across_a_window_boundary_admits_at_most_the_limit(
    gateway_factory: Any, by: str
) -> None:
    async with gateway_factory(limits("claim", by)) as gw:
        campaign = await gw.put_campaign(stock=100, per_user_limit=100)
        clock = FakeClock(minute_aligned())
        desk = claim_desk_on(gw, clock)

        async def attempt(tag: str) -> None:
            user = "one-user" if by == "user" else f"u-{tag}"
            request = ClaimRequest(user_id=user, device_id=f"d-{tag}")
            answer = await desk.decide(campaign, request, Caller("app", "203.0.113.7", tag), tag)
            assert answer.status == 201

        await check_boundary_burst(attempt, clock)
        assert (await gw.stats(campaign))["granted"] == 2 * LIMIT


async def test_redeem_burst_across_a_window_boundary_admits_at_most_the_limit(
    gateway_factory: Any,
) -> None:
    async with gateway_factory(limits("redeem", "device")) as gw:
        clock = FakeClock(minute_aligned())
        desk = redeem_desk_on(gw, clock)

        async def attempt(tag: str) -> None:
            request = RedeemRequest(
                voucher_code=UNKNOWN_CODE, user_id=f"u-{tag}", device_id="one-device"
            )
            try:
                await desk.redeem(request, Caller("app", "203.0.113.7", tag), tag)
            except ApiError as exc:
                if exc.code != "voucher_not_found":
                    raise
                return
            raise AssertionError("an unknown code was redeemed")

        await check_boundary_burst(attempt, clock)


# -- many workers, one Redis ---------------------------------------------------------------


async def test_limit_holds_across_two_workers_sharing_redis(
    tmp_path: Path, valkey_url: str, redis_client: Any
) -> None:
    n = 20
    extra = limits("claim", "ip", limit=n)
    with serve(tmp_path, valkey_url, workers=2, extra=extra) as served:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.put(
                f"{served.admin}/admin/campaigns/flood",
                json={
                    "starts_at": "2020-01-01T00:00:00Z",
                    "ends_at": "2099-01-01T00:00:00Z",
                    "stock": 1000,
                    "per_user_limit": 1,
                    "benefit": {"kind": "voucher"},
                },
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as response:
                assert response.status == 201

            async def one(i: int) -> int:
                async with session.post(
                    f"{served.public}/v1/campaigns/flood/claims",
                    json={"user_id": f"user-{i}", "device_id": f"device-{i}"},
                    headers={"Authorization": f"Bearer {SERVED_KEY}", "Idempotency-Key": f"k{i}"},
                ) as response:
                    return response.status

            statuses = collections.Counter(await asyncio.gather(*(one(i) for i in range(3 * n))))
            sample = f'gateway_claims_total{{result="rate_limited"}} {2 * n}.0'
            text = await scrape_until(session, f"{served.public}/metrics", sample)
    assert statuses == {201: n, 429: 2 * n}, statuses
    assert sample in text


# -- a flooding IP is answered in process ----------------------------------------------------


async def command_calls(redis: Any) -> collections.Counter[str]:
    stats = await redis.info("commandstats")
    return collections.Counter({name: int(value["calls"]) for name, value in stats.items()})


async def metric(gw: Gateway, sample: str, **labels: str) -> float:
    """One sample's value from GET /metrics (0.0 when absent)."""
    response = await gw.public.get("/metrics")
    for family in text_string_to_metric_families(await response.text()):
        for found in family.samples:
            if found.name == sample and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


# The gateway's background tasks: risk-list version polls (GET) and breaker sync (HGETALL);
# the reconciler is parked by a long interval so it sends nothing during the measurement.
BACKGROUND = {"cmdstat_get", "cmdstat_hgetall", "cmdstat_info"}
QUIET_RECONCILER = "[redemption]\nreconcile_interval_s = 60.0\n"


async def test_a_flooding_ip_is_answered_in_process_after_its_first_429(
    gateway_factory: Any,
) -> None:
    async with gateway_factory(limits("claim", "ip", limit=3) + QUIET_RECONCILER) as gw:
        campaign = await gw.put_campaign(stock=100)
        assert [(await gw.claim(campaign)).status for _ in range(3)] == [201] * 3
        labels = {"route": "claim", "dimension": "ip"}
        local = "gateway_ratelimit_rejections_total"
        before_redis = await metric(gw, local, source="redis", **labels)
        await assert_rate_limited(await gw.claim(campaign), limit=3)  # decided in Redis
        assert await metric(gw, local, source="redis", **labels) == before_redis + 1
        before_local = await metric(gw, local, source="local", **labels)
        before = await command_calls(gw.redis)
        for _ in range(30):
            await assert_rate_limited(await gw.claim(campaign), limit=3)
        grew = await command_calls(gw.redis) - before
        assert grew["cmdstat_fcall"] == 0
        assert set(grew) <= BACKGROUND, grew
        assert await metric(gw, local, source="local", **labels) == before_local + 30
        assert (await gw.stats(campaign))["rejected"] == {"rate_limited": 1}


# -- which IP is limited ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def proxied_gateway(
    valkey_url: str, redis_client: Any, trusted: list[str], extra: str
) -> AsyncIterator[Gateway]:
    """Like the gateway_factory fixture, with server.trusted_proxies set."""
    proxies = msgspec.json.encode(trusted).decode()
    config = BASE_CONFIG.replace("[server]\n", f"[server]\ntrusted_proxies = {proxies}\n")
    settings = parse(config + extra, env={})
    public_app, admin_app = create_app(settings, valkey_url)
    async with (
        TestClient(TestServer(public_app)) as public,
        TestClient(TestServer(admin_app)) as admin,
    ):
        yield Gateway(public, admin, settings, redis_client)


async def claim_via(gw: Gateway, campaign: str, forwarded_for: str) -> int:
    response = await gw.claim(campaign, headers={"X-Forwarded-For": forwarded_for})
    return int(response.status)


async def test_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_limited_ip(
    gateway_factory: Any,
) -> None:
    async with gateway_factory(limits("claim", "ip", limit=3)) as gw:
        campaign = await gw.put_campaign(stock=100)
        statuses = [await claim_via(gw, campaign, f"198.51.100.{i}") for i in range(5)]
        assert statuses == [201, 201, 201, 429, 429]


async def test_behind_trusted_proxies_the_rightmost_untrusted_address_is_limited(
    valkey_url: str, redis_client: Any
) -> None:
    trusted = ["127.0.0.1", "10.0.0.0/8"]
    async with proxied_gateway(
        valkey_url, redis_client, trusted, limits("claim", "ip", limit=3)
    ) as gw:
        campaign = await gw.put_campaign(stock=100)
        first = [await claim_via(gw, campaign, "198.51.100.1") for _ in range(3)]
        second = [await claim_via(gw, campaign, "198.51.100.2, 10.0.0.9") for _ in range(3)]
        assert first == second == [201] * 3
        # A client-written left-most entry changes nothing: the proxy appended the real one.
        assert await claim_via(gw, campaign, "203.0.113.50, 198.51.100.1") == 429
        assert await claim_via(gw, campaign, "198.51.100.2") == 429
        # Every hop trusted: the left-most address is the user's.
        assert [await claim_via(gw, campaign, "10.0.0.7, 10.0.0.8") for _ in range(3)] == [201] * 3
        assert await claim_via(gw, campaign, "10.0.0.7") == 429
        # No (or an unparsable) forwarded address: the peer itself is the user.
        peer = [await claim_via(gw, campaign, "not-an-ip") for _ in range(4)]
        assert peer == [201, 201, 201, 429]


async def test_default_lockout_per_device_refuses_guessing_from_many_ips_before_the_51st(
    valkey_url: str, redis_client: Any
) -> None:
    """No [[risk.rules]]: one device guessing from 60 IPs (one failure each) is still locked."""
    async with proxied_gateway(valkey_url, redis_client, ["127.0.0.1"], "") as gw:
        statuses = []
        for i in range(60):
            response = await gw.public.post(
                "/v1/redemptions",
                json={"voucher_code": f"GUESS{i:015d}", "user_id": f"u{i}", "device_id": "rig"},
                headers={
                    "Authorization": f"Bearer {API_KEY}",
                    "Idempotency-Key": f"k{i}",
                    "X-Forwarded-For": f"198.51.100.{i}",
                },
            )
            statuses.append(response.status)
        assert statuses == [404] * 50 + [429] * 10
        assert int(response.headers["Retry-After"]) > 0
        other_device = await gw.redeem("GUESS", user_id="u0", device_id="honest-phone")
        assert other_device.status == 404
