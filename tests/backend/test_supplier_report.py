"""The supplier report against the real supplier simulator: after catch-up, every call the
gateway made is in the ledger, and the counts equal the simulator's order log and stats and
the gateway's own metrics (docs/backend.md, "The supplier report").

One gateway worker, the simulator over HTTP (alpha first, beta second), the backend on SQLite
and on PostgreSQL. alpha first refuses orders (failed: failover to beta), then times out
until its breaker opens (refusals: failover to beta); beta is slow, then answers
"processing" so the reconciler asks again. The backend is stopped during the middle part:
the gateway goes on redeeming and the events wait in the streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from backend.app import create_app
from backend.db import async_url
from backend.ingest import IngestOptions
from gateway.app import SERVICES
from gateway.valkey import keys
from supplier_pool.simulator import running_simulator
from tests.gateway.conftest import ADMIN_TOKEN, API_KEY, Gateway, start_gateway, supplier_config
from tests.support.waiting import eventually

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PUBLIC = {"Authorization": f"Bearer {API_KEY}"}
RECHARGE = {
    "benefit": {"kind": "direct_recharge", "sku": "topup-10", "suppliers": ["alpha", "beta"]}
}
REACHED = ("success", "failed", "processing", "unknown", "not_found")  # a request was received
SUPPLIERS = ("alpha", "beta")


@pytest.fixture
async def sim_gateway(valkey_url: str, redis_client: Any) -> AsyncIterator[tuple[Gateway, str]]:
    """A gateway whose suppliers time out after 0.3 s, on a fresh simulator."""
    async with running_simulator(suppliers=SUPPLIERS, seed=11) as base:
        async for gw in start_gateway(valkey_url, supplier_config(base, timeout_s=0.3)):
            gw.redis = redis_client
            yield gw, base


@pytest.fixture
def backend(
    sim_gateway: tuple[Gateway, str], valkey_url: str, database_url: str, tmp_path: Path
) -> Any:
    """Starts a backend on the test's ledger when called (the same consumer every time)."""
    gateway, _ = sim_gateway
    options = IngestOptions(consumer="report-test", discover_every_s=0.1, idle_sleep_s=0.05)

    def build() -> TestClient[Any, Any]:
        url = async_url(database_url, tmp_path)
        return TestClient(TestServer(create_app(gateway.settings, valkey_url, url, options)))

    return build


async def sim(base: str, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{base}{path}", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def redeem(gateway: Gateway, campaign_id: str, user: str) -> tuple[int, Any]:
    code = await gateway.grant(campaign_id, user_id=user, device_id=f"dev-{user}")
    response = await gateway.redeem(code, user_id=user, device_id=f"dev-{user}", account="acct")
    return response.status, await response.json()


async def gateway_counts(gateway: Gateway) -> dict[tuple[str, ...], float]:
    """The gateway's supplier counters: calls by outcome, failovers, transitions to open."""
    text = await (await gateway.public.get("/metrics")).text()
    counts: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            supplier = s.labels.get("supplier", "")
            if s.name == "gateway_supplier_calls_total":
                counts[("calls", supplier, s.labels["outcome"])] = s.value
            elif s.name == "gateway_supplier_failovers_total":
                counts[("failovers", supplier)] = s.value
            elif (
                s.name == "gateway_supplier_breaker_transitions_total"
                and s.labels["to_state"] == "open"
            ):
                key = ("openings", supplier)
                counts[key] = counts.get(key, 0) + s.value
    return counts


def delta(after: dict[Any, float], before: dict[Any, float], *key: str) -> int:
    return int(after.get(key, 0) - before.get(key, 0))


async def report(client: TestClient[Any, Any]) -> dict[str, dict[str, Any]]:
    """Every supplier's rows summed over the days (a test may straddle midnight UTC)."""
    response = await client.get("/reports/suppliers", headers=AUTH)
    assert response.status == 200, await response.text()
    total: dict[str, dict[str, Any]] = {}
    for row in (await response.json())["suppliers"]:
        t = total.setdefault(row["supplier"], {"calls": {}, "failovers": 0, "openings": 0})
        for outcome, n in row["calls"].items():
            t["calls"][outcome] = t["calls"].get(outcome, 0) + n
        t["failovers"] += row["failovers"]
        t["openings"] += row["breaker_openings"]
        t["p50_ms"] = row["p50_ms"]
    return total


async def status_of(gateway: Gateway, rid: str) -> str:
    response = await gateway.public.get(f"/v1/redemptions/{rid}", headers=PUBLIC)
    return str((await response.json())["status"])


@pytest.mark.timeout(180)
async def test_after_catch_up_the_supplier_report_equals_the_simulator_and_the_gateway(
    sim_gateway: tuple[Gateway, str], backend: Any
) -> None:
    gateway, base = sim_gateway
    before = await gateway_counts(gateway)
    campaign_id = await gateway.put_campaign(stock=100, **RECHARGE)
    stream = keys.events(keys.shard_tag(campaign_id))
    services = gateway.public.app[SERVICES]
    client = backend()
    await client.start_server()
    try:
        # 1. alpha refuses every order: each redemption fails over to beta (slow: 40 ms).
        await sim(base, "PUT", "/_sim/suppliers/alpha", {"failure_rate": 1.0})
        await sim(base, "PUT", "/_sim/suppliers/beta", {"latency_ms": 40})
        for i in range(3):
            status, body = await redeem(gateway, campaign_id, f"a{i}")
            assert (status, body["delivery"]["supplier"]) == (200, "beta"), body
        await eventually(lambda: _has_calls(client, 6), within_s=30, step=0.1)
    finally:
        await client.close()

    # 2. The backend is stopped: alpha times out until its breaker opens, then is refused.
    await sim(base, "PUT", "/_sim/suppliers/alpha", {"failure_rate": 0.0, "timeout_rate": 1.0})
    for i in range(8):
        status, body = await redeem(gateway, campaign_id, f"b{i}")
        assert (status, body["status"], body["delivery"]["supplier"]) == (200, "delivered", "beta")
    assert services.pool.breaker("alpha").state == "open"
    # 3. beta answers "processing": the redemption is pending until the reconciler asks.
    await sim(base, "PUT", "/_sim/suppliers/beta", {"processing_s": 0.3})
    status, body = await redeem(gateway, campaign_id, "c0")
    assert (status, body["status"]) == (202, "pending")
    await eventually(
        lambda: _is(gateway, body["redemption_id"], "delivered"), within_s=10, step=0.1
    )
    await eventually(lambda: _drained(services), within_s=30, step=0.1)
    breaker_stream = keys.events(keys.SUPPLIER_TAG)
    await eventually(lambda: _exists(gateway, breaker_stream), within_s=30, step=0.1)
    # The events waited in the streams for the stopped ledger.
    groups = {g["name"].decode(): g for g in await gateway.redis.xinfo_groups(stream)}
    assert groups["ledger"]["lag"] >= 2 * 8

    after = await gateway_counts(gateway)
    client = backend()
    await client.start_server()
    try:
        expected = {
            s: {o: delta(after, before, "calls", s, o) for o in _outcomes(after)} for s in SUPPLIERS
        }
        expected = {s: {o: n for o, n in calls.items() if n} for s, calls in expected.items()}
        await eventually(lambda: _calls_are(client, expected), within_s=60, step=0.1)
        ledger = await report(client)
    finally:
        await client.close()

    stats = await sim(base, "GET", "/_sim/stats")
    orders = await sim(base, "GET", "/_sim/orders")
    alpha, beta = ledger["alpha"], ledger["beta"]
    for supplier in SUPPLIERS:
        calls = ledger[supplier]["calls"]
        # Every request the supplier received is a call in the ledger, and no other.
        assert sum(calls.get(o, 0) for o in REACHED) == stats[supplier]["calls"]
        # The gateway gave up on exactly the requests the supplier failed or sat on.
        failed_requests = sum(stats[supplier].get(k, 0) for k in ("errors", "timeouts", "down"))
        assert calls.get("unknown", 0) == failed_requests
        assert ledger[supplier]["failovers"] == delta(after, before, "failovers", supplier)
        assert ledger[supplier]["openings"] == delta(after, before, "openings", supplier)
    logged = [(o["supplier"], o["status"]) for o in orders]
    # alpha: 3 orders refused; the timed-out ones were never created, so each GET after a
    # timeout found nothing
    assert alpha["calls"]["failed"] == logged.count(("alpha", "failed")) == 3
    assert alpha["calls"]["not_found"] == stats["alpha"]["get"] == alpha["calls"]["unknown"]
    assert alpha["calls"]["rejected_open"] >= 1
    assert alpha["openings"] == 1 and alpha["failovers"] == 0
    # beta: one order per redemption, every one a success by now; one asked after by the
    # reconciler (the processing one)
    assert stats["beta"]["post"] == logged.count(("beta", "success")) == 12
    assert beta["calls"].get("processing", 0) + beta["calls"]["success"] == stats["beta"]["calls"]
    assert beta["failovers"] == 12 and beta["openings"] == 0
    assert beta["p50_ms"] >= 40


async def _has_calls(client: TestClient[Any, Any], n: int) -> bool:
    rows = (await report(client)).values()
    return sum(sum(r["calls"].values()) for r in rows) >= n


async def _calls_are(client: TestClient[Any, Any], expected: dict[str, dict[str, int]]) -> bool:
    ledger = await report(client)
    got = {
        s: {o: n for o, n in ledger.get(s, {"calls": {}})["calls"].items() if n} for s in SUPPLIERS
    }
    return got == expected


def _outcomes(counts: dict[tuple[str, ...], float]) -> set[str]:
    return {key[2] for key in counts if key[0] == "calls"}


async def _is(gateway: Gateway, rid: str, wanted: str) -> bool:
    return await status_of(gateway, rid) == wanted


async def _drained(services: Any) -> bool:
    return bool(services.call_log.queued == 0)


async def _exists(gateway: Gateway, stream: str) -> bool:
    return bool(await gateway.redis.exists(stream))
