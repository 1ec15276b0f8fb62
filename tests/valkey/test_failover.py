"""Failover (SPEC 5a, 7): the gateway follows the primary Sentinel promotes.

A primary, its replica(s) and three Sentinels on loopback (tests/support/sentinel.py). Claims
flow on a campaign; the primary is SIGKILLed. Meanwhile the gateway answers 503 `unavailable`
(never 500), grants again within 10 s, never grants more than the stock, and in `replica`
mode every grant it acknowledged (201) is on the new primary. `replica` mode runs with two
replicas: it answers only once a replica has the change, so one must be left after the
promotion (docs/durability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.valkey import keys
from tests.gateway.conftest import Gateway, start_gateway
from tests.support.sentinel import SentinelSet, start_sentinels, stop_sentinels
from tests.support.waiting import eventually

STOCK = 100_000
RECOVERY_S = 10.0


@pytest.fixture
def sentinels(request: pytest.FixtureRequest) -> Iterator[SentinelSet]:
    replicas = 2 if request.node.callspec.params["durability"] == "replica" else 1
    found = start_sentinels(Path(tempfile.mkdtemp(prefix="gw-test-sentinel-")), replicas)
    try:
        yield found
    finally:
        stop_sentinels(found)


class Recorder:
    """Every claim's answer, with when its request was sent (monotonic seconds)."""

    def __init__(self) -> None:
        self.answers: list[tuple[float, int, str, bool]] = []  # (sent, status, code, unknown)
        self.granted: list[str] = []  # voucher codes of every 201

    async def claim_until(self, gw: Gateway, campaign: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            response = await gw.claim(campaign)
            body = await response.json()
            unknown = response.headers.get("Outcome-Unknown") == "true"
            if response.status == 201:
                self.granted.append(body["voucher"]["code"])
                code = ""
            else:
                code = body["error"]["code"]
                await asyncio.sleep(0.02)
            self.answers.append((sent, response.status, code, unknown))


@pytest.mark.parametrize("durability", ["replica", "everysec"])
async def test_killing_the_primary_under_claims_fails_over_without_oversell(
    sentinels: SentinelSet, durability: str
) -> None:
    extra = f'[redis]\nurl = "{sentinels.url}"\ntimeout_s = 0.5\ndurability = "{durability}"\n'
    async with contextlib.aclosing(start_gateway(sentinels.url, extra)) as gateways:
        async for gw in gateways:
            await fail_over_under_claims(gw, sentinels, durability)


async def fail_over_under_claims(gw: Gateway, sentinels: SentinelSet, durability: str) -> None:
    await gw.put_campaign("flash", stock=STOCK, per_user_limit=1)
    recorder, stop = Recorder(), asyncio.Event()
    loaders = [asyncio.create_task(recorder.claim_until(gw, "flash", stop)) for _ in range(8)]
    try:
        await eventually(lambda: len(recorder.granted) >= 100, within_s=10)
        old = sentinels.kill_primary()
        killed_at = time.monotonic()

        def recovered() -> float | None:
            return next(
                (at for at, s, _, _ in recorder.answers if at > killed_at and s == 201), None
            )

        recovered_at = await eventually(recovered, within_s=RECOVERY_S, step=0.05)
        granted_after = len(recorder.granted)
        await eventually(lambda: len(recorder.granted) >= granted_after + 50, within_s=5)
    finally:
        stop.set()
        await asyncio.gather(*loaders)

    assert recovered_at - killed_at < RECOVERY_S
    during = [(s, c, u) for at, s, c, u in recorder.answers if killed_at < at < recovered_at]
    assert during and all(s == 503 and c == "unavailable" for s, c, _ in during), during[:5]
    assert {s for _, s, _, _ in recorder.answers} <= {201, 503}

    primary = sentinels.node_on(sentinels.current_primary_port())
    assert primary.port != old.port
    new = primary.client()
    tag = keys.shard_tag("flash")
    stats = await eventually(lambda: stats_or_none(gw), within_s=5)
    granted = int(new.hget(keys.campaign(tag, "flash"), "granted") or 0)
    assert stats["granted"] == granted
    assert granted + stats["stock_left"] == STOCK  # nothing sold twice or past the stock
    missing = lost(new, tag, recorder.granted)
    assert len(set(recorder.granted)) == len(recorder.granted)
    assert granted >= len(recorder.granted) - missing
    if durability == "replica":
        assert missing == 0


def lost(client: object, tag: str, codes: list[str]) -> int:
    """How many acknowledged vouchers the primary does not hold."""
    pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
    for code in codes:
        pipe.exists(keys.voucher(tag, code))
    return sum(1 for found in pipe.execute() if not found)


async def stats_or_none(gw: Gateway) -> dict[str, int] | None:
    response = await gw.admin_call("GET", "/admin/campaigns/flash/stats")
    return dict(await response.json()) if response.status == 200 else None
