"""Refused claims leave no reference cycles: a frame that holds the error it raises is a cycle
(frame -> error -> traceback -> frame) that only the collector frees, and at sold-out rates
those collections took a quarter of a worker's time (docs/benchmarks.md)."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable

from tests.gateway.conftest import Gateway
from tests.gateway.test_claim_batches import decide, desk_of

CLAIMS = 200


async def garbage_left_by(claim: Callable[[int], Awaitable[tuple[int, str]]], code: str) -> int:
    """Objects the collector finds unreachable after CLAIMS refusals, none collected between."""
    gc.collect()
    gc.disable()
    try:
        for i in range(CLAIMS):
            assert (await claim(i))[1] == code
        return gc.collect()
    finally:
        gc.enable()


async def test_sold_out_answers_leave_no_cycles(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=1)
    desk = desk_of(gateway)
    assert (await decide(desk, campaign, "first", "d0"))[0] == 201
    assert (await decide(desk, campaign, "second", "d1"))[1] == "sold_out"  # raises the flag

    async def claim(i: int) -> tuple[int, str]:
        return await decide(desk, campaign, f"u{i}", f"d{i}")

    assert await garbage_left_by(claim, "sold_out") < CLAIMS // 10


async def test_refusals_decided_in_valkey_leave_no_cycles(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=1000, per_user_limit=1)
    desk = desk_of(gateway)
    assert (await decide(desk, campaign, "scalper", "d0"))[0] == 201

    async def claim(i: int) -> tuple[int, str]:
        return await decide(desk, campaign, "scalper", f"d{i}")

    assert await garbage_left_by(claim, "limit_reached") < CLAIMS // 10


async def test_replayed_refusals_leave_no_cycles(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=1000, per_user_limit=1)
    desk = desk_of(gateway)
    assert (await decide(desk, campaign, "scalper", "d0"))[0] == 201
    assert (await decide(desk, campaign, "scalper", "d1", key="retried"))[1] == "limit_reached"

    async def claim(_i: int) -> tuple[int, str]:
        return await decide(desk, campaign, "scalper", "d1", key="retried")

    assert await garbage_left_by(claim, "limit_reached") < CLAIMS // 10
