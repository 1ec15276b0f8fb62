"""A worker dying mid-redemption: the voucher is never lost and never delivered twice.

- SIGKILL while the supplier call is in flight (real `gateway serve`, one worker): the master
  replaces the worker and the reconciler settles the redemption after `sweep_after_s`.
- A crash before any supplier call, driven in process: a reservation with no supplier recorded
  is released by the reconciler once it is due, and the voucher is redeemable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from gateway import codes
from gateway.app import SERVICES
from gateway.models import Caller, RedeemRequest
from gateway.redemptions.desk import RedeemDesk
from gateway.redemptions.reconciler import Reconciler
from gateway.valkey import keys
from tests.gateway.conftest import Gateway
from tests.gateway.test_redemptions import RECHARGE, error_code, sim_orders
from tests.gateway.test_supplier_resilience import (
    ADMIN,
    PUBLIC,
    grant_all,
    put_campaign,
    redeem,
    served_suppliers,
    sim_call,
    sim_count,
    sim_successes,
)
from tests.support.served import serve, wait_ready
from tests.support.waiting import eventually, worker_pids

SWEEP_AFTER_S = 4.0


async def test_worker_killed_mid_supplier_call_ends_delivered_once_or_redeemable_again(
    tmp_path: Path, valkey_url: str, redis_client: Any, simulator: str
) -> None:
    await sim_call(simulator, "PUT", "/_sim/suppliers/alpha", {"latency_ms": 3000})
    extra = served_suppliers(
        simulator, timeout_s=5.0, sweep_after_s=SWEEP_AFTER_S, reconcile_interval_s=0.5
    )
    with serve(tmp_path, valkey_url, workers=1, extra=extra) as served:
        master = served.process.pid
        await put_campaign(served.admin, "crash", 5, RECHARGE["benefit"])
        code = (await grant_all(served.public, "crash", ["ruth"]))["ruth"]
        (worker,) = worker_pids(master)
        async with aiohttp.ClientSession() as session:
            call = asyncio.create_task(redeem(session, served.public, code, "ruth", key="k1"))
            await eventually(lambda: sim_count(simulator, "alpha"), 2.0)  # call in flight
            os.kill(worker, signal.SIGKILL)
            with pytest.raises(aiohttp.ClientError):
                await call
            killed_at = time.monotonic()

            async def replaced() -> set[int]:
                return worker_pids(master) - {worker}

            await eventually(replaced, 10.0)
            await asyncio.to_thread(wait_ready, served.public, 15.0)
            # Until the reconciler has asked alpha, the voucher stays reserved: no second try.
            status, early = await redeem(session, served.public, code, "ruth", key="k-early")
            assert (status, early["error"]["code"]) == (409, "request_in_progress")

            async def settled() -> Any:  # a replay with the same key shows the redemption
                with contextlib.suppress(aiohttp.ClientError):
                    status, body = await redeem(session, served.public, code, "ruth", key="k1")
                    return body if status == 200 else None
                return None

            body = await eventually(settled, SWEEP_AFTER_S + 8.0, step=0.25)
            assert time.monotonic() - killed_at < SWEEP_AFTER_S + 8.0
            rid = body["redemption_id"]
            await sim_call(simulator, "PUT", "/_sim/suppliers/alpha", {"latency_ms": 0})
            if body["status"] == "delivered":
                assert await sim_successes(simulator) == {rid: 1}
                async with session.get(
                    f"{served.public}/v1/redemptions/{rid}", headers=PUBLIC
                ) as response:
                    assert (await response.json())["status"] == "delivered"
                status, again = await redeem(session, served.public, code, "ruth", key="k2")
                assert (status, again["error"]["code"]) == (409, "voucher_redeemed")
            else:
                assert body["status"] == "failed", body
                status, again = await redeem(session, served.public, code, "ruth", key="k2")
                assert status == 200 and again["status"] == "delivered", again
                assert list((await sim_successes(simulator)).values()) == [1]
            async with session.get(
                f"{served.admin}/admin/campaigns/crash/stats", headers=ADMIN
            ) as response:
                assert (await response.json())["redeemed"] == 1


class StuckPool:
    """A supplier pool whose worker 'dies' before it calls any supplier."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def deliver(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        await asyncio.Event().wait()


async def test_crash_before_any_supplier_call_is_released_by_the_reconciler_when_due(
    redeem_gateway: Gateway,
) -> None:
    gw = redeem_gateway
    services = gw.public.server.app[SERVICES]
    campaign = await gw.put_campaign(**RECHARGE)
    code = await gw.grant(campaign)
    stuck = StuckPool()
    desk = RedeemDesk(
        services.redis,
        services.scripts,
        gw.settings,
        cast(Any, stuck),
        services.data_key,
        services.claim_ids,
    )
    request = RedeemRequest(voucher_code=code, user_id="ruth", device_id="dev", account="acct")
    doomed = asyncio.create_task(desk.redeem(request, Caller("app", "127.0.0.1", "r-1"), "k1"))
    await asyncio.wait_for(stuck.entered.wait(), 5)
    doomed.cancel()  # the worker is gone: reserved in Redis, no supplier recorded
    with contextlib.suppress(asyncio.CancelledError):
        await doomed

    tag = codes.code_tag(code)
    (rid,) = [r.decode() for r in await gw.redis.zrange(keys.pending(tag), 0, -1)]
    assert (await services.redemptions.recharge.record(tag, rid)).get("supplier", "") == ""
    busy = await gw.redeem(code, account="acct", key="k2")
    assert busy.status == 409 and await error_code(busy) == "request_in_progress"

    sweep_after_s = gw.settings.redemption.sweep_after_s
    now = Reconciler(services.redis, services.scripts, services.redemptions.recharge, 0.2)
    assert await now.sweep_once() == 0  # not due yet: a live worker may still be at work
    later = Reconciler(
        services.redis,
        services.scripts,
        services.redemptions.recharge,
        0.2,
        clock=lambda: time.time() + sweep_after_s + 0.5,
    )
    assert await later.sweep_once() == 1
    record = await services.redemptions.recharge.record(tag, rid)
    assert (record["status"], record["failure"]) == ("failed", "abandoned")

    retry = await gw.redeem(code, account="acct", key="k1")  # the release dropped key k1
    body = await retry.json()
    assert retry.status == 200 and "Idempotent-Replayed" not in retry.headers, body
    assert body["status"] == "delivered" and body["redemption_id"] != rid
    orders = await sim_orders(gw)
    assert [(o["order_id"], o["status"]) for o in orders] == [(body["redemption_id"], "success")]
    assert (await gw.stats(campaign))["redeemed"] == 1
