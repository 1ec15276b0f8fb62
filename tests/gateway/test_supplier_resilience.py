"""Supplier breakers seen from the gateway: trips, failover, and breaker state across workers.

The breaker's own wait → half-open → close / re-open sequence runs on a fake clock in
tests/supplier_pool/test_pool.py (the gateway uses supplier_pool's default BreakerConfig:
window 20, minimum 5 calls, failure rate 0.5, 10 s open); here we show what a client sees.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.gateway.conftest import Gateway, supplier_config
from tests.gateway.test_redemptions import RECHARGE, error_code, knobs
from tests.support.served import ADMIN_TOKEN, API_KEY, serve

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PUBLIC = {"Authorization": f"Bearer {API_KEY}"}
MINIMUM_CALLS = 5  # supplier_pool.breaker.BreakerConfig().minimum_calls, at rate 1.0


# -- the simulator, by base URL (usable with in-process and served gateways) ----------------


async def sim_call(base: str, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{base}{path}", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def sim_count(base: str, supplier: str, counter: str = "post") -> int:
    """One supplier's counter: "post" (orders placed), "get", "calls" (both), "timeouts"..."""
    return int((await sim_call(base, "GET", "/_sim/stats"))[supplier].get(counter, 0))


async def sim_successes(base: str) -> dict[str, int]:
    """Per order id, how many suppliers report it as a success."""
    counts: dict[str, int] = {}
    for order in await sim_call(base, "GET", "/_sim/orders"):
        if order["status"] == "success":
            counts[order["order_id"]] = counts.get(order["order_id"], 0) + 1
    return counts


# -- a served gateway ----------------------------------------------------------------------


def served_suppliers(
    base: str, timeout_s: float, sweep_after_s: float = 4.0, reconcile_interval_s: float = 0.5
) -> str:
    """[[suppliers]] alpha (priority 1) and beta (2) on the simulator, and [redemption]."""
    return f"""
[[suppliers]]
id = "alpha"
base_url = "{base}/s/alpha"
timeout_s = {timeout_s}
max_concurrency = 512
priority = 1
[[suppliers]]
id = "beta"
base_url = "{base}/s/beta"
timeout_s = {timeout_s}
max_concurrency = 512
priority = 2
[redemption]
sweep_after_s = {sweep_after_s}
reconcile_interval_s = {reconcile_interval_s}
"""


def fresh_connections() -> aiohttp.ClientSession:
    """A session that opens a new connection per request, so SO_REUSEPORT spreads them."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))


async def put_campaign(admin: str, campaign_id: str, stock: int, benefit: dict[str, Any]) -> None:
    body = {
        "name": campaign_id,
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
        "stock": stock,
        "per_user_limit": 1,
        "voucher_ttl_s": 3600,
        "benefit": benefit,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{admin}/admin/campaigns/{campaign_id}", json=body, headers=ADMIN) as response,
    ):
        assert response.status in (200, 201), await response.text()


async def grant_all(public: str, campaign_id: str, users: list[str]) -> dict[str, str]:
    """Claim one voucher per user, concurrently; returns user → voucher code."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one(user: str) -> tuple[str, str]:
            async with session.post(
                f"{public}/v1/campaigns/{campaign_id}/claims",
                json={"user_id": user, "device_id": f"dev-{user}"},
                headers={**PUBLIC, "Idempotency-Key": uuid.uuid4().hex},
            ) as response:
                body = await response.json()
                assert response.status == 201, body
                return user, str(body["voucher"]["code"])

        return dict(await asyncio.gather(*(one(u) for u in users)))


async def redeem(
    session: aiohttp.ClientSession,
    public: str,
    code: str,
    user: str,
    key: str | None = None,
    account: str | None = "acct",
) -> tuple[int, Any]:
    body = {"voucher_code": code, "user_id": user, "device_id": f"dev-{user}"}
    if account is not None:
        body["account"] = account
    async with session.post(
        f"{public}/v1/redemptions",
        json=body,
        headers={**PUBLIC, "Idempotency-Key": key or uuid.uuid4().hex},
    ) as response:
        return response.status, await response.json()


async def redeem_all(
    public: str, vouchers: dict[str, str], account: str | None = "acct"
) -> list[tuple[int, Any]]:
    """Redeem every (user, code) at once, each over its own fresh connection."""
    async with fresh_connections() as session:
        return await asyncio.gather(
            *(
                redeem(session, public, code, user, account=account)
                for user, code in vouchers.items()
            )
        )


async def breaker_states(admin: str, supplier: str, connections: int = 12) -> set[str]:
    """`supplier`'s breaker state as reported by whichever workers answer fresh connections."""
    states = set()
    async with fresh_connections() as session:
        for _ in range(connections):
            async with session.get(f"{admin}/admin/suppliers", headers=ADMIN) as response:
                listing = (await response.json())["suppliers"]
            states |= {s["state"] for s in listing if s["id"] == supplier}
    return states


def suppliers_of(results: list[tuple[int, Any]]) -> set[str]:
    assert [status for status, _ in results] == [200] * len(results), results
    return {body["delivery"]["supplier"] for _, body in results}


# -- in-process: one worker --------------------------------------------------------------


@pytest.fixture
async def fast_timeout_gateway(gateway_factory: Any, simulator: str) -> AsyncIterator[Gateway]:
    """Suppliers time out after 0.3 s, well inside the live budget (sweep_after_s / 2 = 1 s)."""
    async with gateway_factory(supplier_config(simulator, timeout_s=0.3)) as gw:
        gw.simulator = simulator  # type: ignore[attr-defined]
        yield gw


async def supplier_state(gw: Gateway, supplier: str) -> str:
    listing = await (await gw.admin_call("GET", "/admin/suppliers")).json()
    return str(next(s["state"] for s in listing["suppliers"] if s["id"] == supplier))


async def poll_status(gw: Gateway, rid: str, wanted: set[str], seconds: float = 10.0) -> str:
    status = ""
    for _ in range(int(seconds / 0.1)):
        view = await gw.public.get(
            f"/v1/redemptions/{rid}", headers={"Authorization": "Bearer test-key"}
        )
        status = (await view.json())["status"]
        if status in wanted:
            break
        await asyncio.sleep(0.1)
    return status


async def test_timeouts_open_the_breaker_and_later_redemptions_go_straight_to_beta(
    fast_timeout_gateway: Gateway,
) -> None:
    gw, base = fast_timeout_gateway, fast_timeout_gateway.simulator  # type: ignore[attr-defined]
    await knobs(gw, "alpha", timeout_rate=1.0, timeout_s=3.0)  # never commits: GET says 404
    campaign = await gw.put_campaign(stock=30, **RECHARGE)
    for i in range(MINIMUM_CALLS + 10):
        assert await supplier_state(gw, "alpha") == ("open" if i >= MINIMUM_CALLS else "closed")
        code = await gw.grant(campaign, user_id=f"u{i}")
        response = await gw.redeem(code, user_id=f"u{i}", account="acct")
        body = await response.json()
        # beta serves throughout: first after alpha's unknown outcome proved a no, then alone
        assert response.status == 200 and body["delivery"]["supplier"] == "beta", body
    assert await supplier_state(gw, "beta") == "closed"
    assert await sim_count(base, "alpha") == MINIMUM_CALLS  # nothing reached alpha once open
    assert await sim_count(base, "beta") == MINIMUM_CALLS + 10
    assert set((await sim_successes(base)).values()) == {1}


async def test_5xx_are_pending_until_the_breaker_opens_then_beta_serves_and_alpha_settles(
    fast_timeout_gateway: Gateway,
) -> None:
    gw, base = fast_timeout_gateway, fast_timeout_gateway.simulator  # type: ignore[attr-defined]
    await knobs(gw, "alpha", error_rate=1.0)  # 500 on POST and GET: outcome unknown
    campaign = await gw.put_campaign(stock=20, **RECHARGE)
    pending = []
    for i in range(MINIMUM_CALLS):
        code = await gw.grant(campaign, user_id=f"p{i}")
        response = await gw.redeem(code, user_id=f"p{i}", account="acct")
        body = await response.json()
        assert response.status == 202 and body["delivery"]["supplier"] == "alpha", body
        pending.append((code, f"p{i}", body["redemption_id"]))
    assert await sim_count(base, "beta") == 0  # never another supplier while alpha is unknown
    assert await supplier_state(gw, "alpha") == "open"
    for i in range(5):
        code = await gw.grant(campaign, user_id=f"b{i}")
        response = await gw.redeem(code, user_id=f"b{i}", account="acct")
        assert response.status == 200, await response.text()
        assert (await response.json())["delivery"]["supplier"] == "beta"
    assert await sim_count(base, "alpha") == MINIMUM_CALLS

    await knobs(gw, "alpha", error_rate=0.0)  # alpha answers again: it never saw the orders
    for code, user, rid in pending:
        assert await poll_status(gw, rid, {"failed"}) == "failed"
        again = await gw.redeem(code, user_id=user, account="acct")  # redeemable again
        assert again.status == 200 and (await again.json())["delivery"]["supplier"] == "beta"
    assert await sim_count(base, "alpha") == MINIMUM_CALLS  # still open: no new order there
    assert (await gw.stats(campaign))["redeemed"] == 10


async def test_force_open_alpha_fails_over_to_beta_and_reset_closes_it(
    fast_timeout_gateway: Gateway,
) -> None:
    gw = fast_timeout_gateway
    assert (await gw.admin_call("POST", "/admin/suppliers/alpha/force-open")).status == 200
    campaign = await gw.put_campaign(stock=5, **RECHARGE)
    code = await gw.grant(campaign)
    response = await gw.redeem(code, account="acct")
    assert response.status == 200 and (await response.json())["delivery"]["supplier"] == "beta"
    assert (await gw.admin_call("POST", "/admin/suppliers/alpha/reset")).status == 200
    assert await supplier_state(gw, "alpha") == "closed"
    unknown = await gw.admin_call("POST", "/admin/suppliers/gamma/force-open")
    assert unknown.status == 404 and await error_code(unknown) == "supplier_not_found"


# -- served: two worker processes -------------------------------------------------------


async def test_force_open_through_admin_stops_alpha_calls_from_both_workers_within_1s(
    tmp_path: Path, valkey_url: str, redis_client: Any, simulator: str
) -> None:
    with serve(tmp_path, valkey_url, workers=2, extra=served_suppliers(simulator, 1.0)) as served:
        await put_campaign(served.admin, "force", 120, RECHARGE["benefit"])
        vouchers = await grant_all(served.public, "force", [f"u{i}" for i in range(100)])
        users = list(vouchers)
        before = await redeem_all(served.public, {u: vouchers[u] for u in users[:30]})
        assert suppliers_of(before) == {"alpha"}

        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{served.admin}/admin/suppliers/alpha/force-open", headers=ADMIN
            ) as response,
        ):  # reaches one worker; the other learns it from Redis
            assert response.status == 200
            assert (await response.json())["state"] == "forced_open"
        await asyncio.sleep(1.0)
        alpha_calls = await sim_count(simulator, "alpha", "calls")
        after = await redeem_all(served.public, {u: vouchers[u] for u in users[30:]})
        assert suppliers_of(after) == {"beta"}
        assert await sim_count(simulator, "alpha", "calls") == alpha_calls
        assert await breaker_states(served.admin, "alpha") == {"forced_open"}


async def test_a_trip_in_one_worker_opens_alpha_in_the_other(
    tmp_path: Path, valkey_url: str, redis_client: Any, simulator: str
) -> None:
    await sim_call(
        simulator, "PUT", "/_sim/suppliers/alpha", {"timeout_rate": 1.0, "timeout_s": 3.0}
    )
    with serve(tmp_path, valkey_url, workers=2, extra=served_suppliers(simulator, 0.3)) as served:
        await put_campaign(served.admin, "trip", 60, RECHARGE["benefit"])
        vouchers = await grant_all(served.public, "trip", [f"u{i}" for i in range(50)])
        users = list(vouchers)
        # One keep-alive connection: one worker sees every timeout and trips alpha.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as one:
            for user in users[:MINIMUM_CALLS]:
                status, body = await redeem(one, served.public, vouchers[user], user)
                assert status == 200 and body["delivery"]["supplier"] == "beta", body
        assert await sim_count(simulator, "alpha") == MINIMUM_CALLS
        await asyncio.sleep(1.0)  # the trip is published and applied (sync every 0.25 s)
        assert await breaker_states(served.admin, "alpha") == {"open"}
        after = await redeem_all(served.public, {u: vouchers[u] for u in users[MINIMUM_CALLS:]})
        assert suppliers_of(after) == {"beta"}
        assert await sim_count(simulator, "alpha") == MINIMUM_CALLS
